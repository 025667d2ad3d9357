package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's Prometheus metrics, on the agent's own registry:
// the process-wide default registry is global mutable state, and two agents
// in one process (tests, `backflip dev`) must not share counters.
type metrics struct {
	reg *prometheus.Registry

	probeDuration *prometheus.HistogramVec // by kind
	probeErrors   *prometheus.CounterVec   // by route, version, kind
	warm          *prometheus.GaugeVec     // by route, version: 1 warm, 0 not
	canary        *prometheus.GaugeVec     // by route, version: last canary latency
	registered    prometheus.Gauge         // 1 while the node record is in etcd under a live lease
	leaseGrants   prometheus.Counter       // leases granted: 1 + re-registrations
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		probeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "backflip_agent",
			Name:      "probe_duration_seconds",
			Help:      "Duration of one probe of one inference server (health, model, canary), by server kind.",
			Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		probeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "backflip_agent",
			Name:      "probe_errors_total",
			Help:      "Probes that found a server not warm, with an error, by route, version and kind.",
		}, []string{"route", "version", "kind"}),
		warm: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "backflip_agent",
			Name:      "warm",
			Help:      "1 when the last probe found the version loaded, ready and answering its canary within budget, else 0.",
		}, []string{"route", "version"}),
		canary: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "backflip_agent",
			Name:      "canary_latency_seconds",
			Help:      "Latency of the last canary inference, by route and version (0 when it did not run).",
		}, []string{"route", "version"}),
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "backflip_agent",
			Name:      "registered",
			Help:      "1 while the node record is registered in etcd under a live lease, else 0.",
		}),
		leaseGrants: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "backflip_agent",
			Name:      "lease_grants_total",
			Help:      "etcd leases granted for the node record; more than one means the registration was lost and redone.",
		}),
	}
	m.reg.MustRegister(m.probeDuration, m.probeErrors, m.warm, m.canary, m.registered, m.leaseGrants,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is the agent's metrics registry, served at /metrics.
func (a *Agent) Registry() *prometheus.Registry { return a.metrics.reg }
