package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdStatusTimeout bounds the Status calls of one scrape: /metrics never
// waits longer than this on etcd, whatever state etcd is in.
const etcdStatusTimeout = 2 * time.Second

// etcdStatuser is what the collector needs of an etcd client.
type etcdStatuser interface {
	Endpoints() []string
	Status(ctx context.Context, endpoint string) (*clientv3.StatusResponse, error)
}

// etcdCollector exports the etcd database size as backflip sees it, asking
// every configured endpoint for its status (Maintenance.Status) at scrape
// time, all at once and within a timeout:
//
//   - backflip_etcd_status_up{client_url}: 1 when the endpoint (a
//     BACKFLIP_ETCD_ENDPOINTS entry) answered;
//   - backflip_etcd_db_size_bytes, backflip_etcd_db_size_in_use_bytes and
//     backflip_etcd_quota_backend_bytes, labelled client_url and member:
//     what the member behind the endpoint reports (member is its id in hex,
//     as etcdctl prints it; an endpoint behind a load balancer reports
//     whichever member answered). The quota is left out
//     when the member does not report one (etcd before 3.6).
//
// An endpoint that does not answer in time has only its up series, at 0.
type etcdCollector struct {
	cli     etcdStatuser
	timeout time.Duration

	up, size, inUse, quota *prometheus.Desc
}

func newEtcdCollector(cli etcdStatuser, timeout time.Duration) *etcdCollector {
	if timeout <= 0 || timeout > etcdStatusTimeout {
		timeout = etcdStatusTimeout
	}
	// Not "endpoint": the Prometheus Operator sets that target label; and
	// not etcd_*, which reads as one of etcd's own metric names.
	member := []string{"client_url", "member"}
	return &etcdCollector{
		cli: cli, timeout: timeout,
		up: prometheus.NewDesc("backflip_etcd_status_up",
			"1 when the etcd endpoint answered backflip's status request at this scrape, 0 when it failed or did not answer in time.",
			[]string{"client_url"}, nil),
		size: prometheus.NewDesc("backflip_etcd_db_size_bytes",
			"Size of the etcd member's backend database, as its status reports it: what the backend quota applies to.",
			member, nil),
		inUse: prometheus.NewDesc("backflip_etcd_db_size_in_use_bytes",
			"Bytes of the etcd member's backend database in use; the rest is free space only a defragmentation returns.",
			member, nil),
		quota: prometheus.NewDesc("backflip_etcd_quota_backend_bytes",
			"The etcd member's backend quota: past it etcd raises a NOSPACE alarm and refuses writes.",
			member, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *etcdCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.size
	ch <- c.inUse
	ch <- c.quota
}

type etcdStatusResult struct {
	endpoint string
	resp     *clientv3.StatusResponse
	err      error
}

// Collect implements prometheus.Collector. It returns within the timeout
// (plus a little), even if a status call does not.
func (c *etcdCollector) Collect(ch chan<- prometheus.Metric) {
	endpoints := slices.Compact(slices.Sorted(slices.Values(c.cli.Endpoints())))
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	results := make(chan etcdStatusResult, len(endpoints)) // buffered: a late call never blocks
	for _, ep := range endpoints {
		go func() {
			resp, err := c.cli.Status(ctx, ep)
			results <- etcdStatusResult{endpoint: ep, resp: resp, err: err}
		}()
	}
	answered := map[string]*clientv3.StatusResponse{}
	deadline := time.NewTimer(c.timeout + 100*time.Millisecond)
	defer deadline.Stop()
wait:
	for range endpoints {
		select {
		case r := <-results:
			if r.err == nil && r.resp != nil {
				answered[r.endpoint] = r.resp
			}
		case <-deadline.C:
			break wait
		}
	}
	for _, ep := range endpoints {
		resp, ok := answered[ep]
		if !ok {
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, ep)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, ep)
		member := ""
		if resp.Header != nil {
			member = fmt.Sprintf("%x", resp.Header.MemberId)
		}
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(resp.DbSize), ep, member)
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(resp.DbSizeInUse), ep, member)
		if resp.DbSizeQuota > 0 {
			ch <- prometheus.MustNewConstMetric(c.quota, prometheus.GaugeValue, float64(resp.DbSizeQuota), ep, member)
		}
	}
}
