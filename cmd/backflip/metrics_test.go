package main

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// series is one gathered sample: its labels and value.
type series struct {
	labels map[string]string
	value  float64
}

func gatherAll(t *testing.T, reg *prometheus.Registry) map[string][]series {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]series{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := series{labels: map[string]string{}, value: m.GetGauge().GetValue()}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			out[mf.GetName()] = append(out[mf.GetName()], s)
		}
	}
	return out
}

// TestEtcdCollector: the etcd database size, its part in use and the quota
// come from each endpoint's status at scrape time; an endpoint that does
// not answer is reported down within the timeout, and the scrape does not
// wait for it any longer.
func TestEtcdCollector(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint(), proxy.Endpoint(), srv.Endpoint()},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	// Something in the database.
	for i := range 50 {
		if _, err := cli.Put(t.Context(), "/collector/k", string(make([]byte, 1000+i))); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newEtcdCollector(cli, time.Second))

	got := gatherAll(t, reg)
	if ups := got["backflip_etcd_status_up"]; len(ups) != 2 {
		t.Fatalf("backflip_etcd_status_up %v: want one series per distinct endpoint", ups)
	}
	for _, up := range got["backflip_etcd_status_up"] {
		if up.value != 1 {
			t.Errorf("endpoint %s down: %v", up.labels["client_url"], up)
		}
	}
	size, inUse, quota := got["backflip_etcd_db_size_bytes"], got["backflip_etcd_db_size_in_use_bytes"], got["backflip_etcd_quota_backend_bytes"]
	if len(size) != 2 || len(inUse) != 2 || len(quota) != 2 {
		t.Fatalf("size %v, in use %v, quota %v: want one per endpoint", size, inUse, quota)
	}
	status, err := cli.Status(t.Context(), srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	member := size[0].labels["member"]
	for i := range size {
		s, u, q := size[i], inUse[i], quota[i]
		if s.labels["member"] != member || member == "" || member == "0" {
			t.Errorf("member label %q (both endpoints reach the same member)", s.labels["member"])
		}
		if s.value <= 0 || u.value <= 0 || u.value > s.value || q.value != float64(status.DbSizeQuota) || q.value < s.value {
			t.Errorf("endpoint %s: size %v, in use %v, quota %v (the member's status says quota %d)", s.labels["client_url"], s.value, u.value, q.value, status.DbSizeQuota)
		}
	}

	// The proxied endpoint stops answering: it is down, the other is not,
	// and the scrape is over in about the timeout.
	proxy.Blackhole()
	start := time.Now()
	got = gatherAll(t, reg)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a scrape with an endpoint that does not answer took %s", took)
	}
	for _, up := range got["backflip_etcd_status_up"] {
		want := 1.0
		if up.labels["client_url"] == proxy.Endpoint() {
			want = 0
		}
		if up.value != want {
			t.Errorf("backflip_etcd_status_up %v, want %v", up, want)
		}
	}
	if s := got["backflip_etcd_db_size_bytes"]; len(s) != 1 || s[0].labels["client_url"] != srv.Endpoint() {
		t.Errorf("backflip_etcd_db_size_bytes with an endpoint down: %v", s)
	}
	proxy.Unblackhole()
}
