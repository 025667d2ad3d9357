package routing

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// readerGauges reads the reader's gauges from reg, by name; labels are the
// labels of the last series of each name.
func readerGauges(tb testing.TB, reg *prometheus.Registry) (values map[string]float64, labels map[string]map[string]string) {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	values, labels = map[string]float64{}, map[string]map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			values[mf.GetName()] = m.GetGauge().GetValue()
			ls := map[string]string{}
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = l.GetValue()
			}
			labels[mf.GetName()] = ls
		}
	}
	return values, labels
}

// TestReaderMetrics: a reader exports whether it is stale, when it last
// heard from etcd and its revision; cut off from etcd it reports stale
// until it hears again; Close unregisters the metrics.
func TestReaderMetrics(t *testing.T) {
	srv := etcdtest.Start(t)
	s := NewStore(srv.Client(t), testPrefix, zap.NewNop())
	f := newFlipper(t, s, "chat-70b")
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	reg := prometheus.NewRegistry()
	start := time.Now()
	w, err := NewWatcher(WatcherConfig{Client: proxiedClient(t, proxy.Endpoint()), Prefix: testPrefix, Logger: zap.NewNop(),
		MaxStaleness: time.Second, RouterID: "router-1", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Before it has heard anything: stale, never heard.
	v, labels := readerGauges(t, reg)
	if v["backflip_reader_stale"] != 1 || v["backflip_reader_last_heard_timestamp_seconds"] != 0 || v["backflip_reader_revision"] != 0 {
		t.Fatalf("before the start: %v", v)
	}
	for _, name := range []string{"backflip_reader_stale", "backflip_reader_last_heard_timestamp_seconds", "backflip_reader_revision"} {
		if labels[name]["router"] != "router-1" || len(labels[name]) != 1 {
			t.Errorf("%s labels %v, want router=router-1", name, labels[name])
		}
	}

	// A second reader with the same router id on the same Registerer
	// would export the same series: refused.
	if _, err := NewWatcher(WatcherConfig{Client: srv.Client(t), Prefix: testPrefix, Logger: zap.NewNop(), RouterID: "router-1", Registerer: reg}); err == nil {
		t.Fatal("a second reader with the same series was accepted")
	}

	w.Start(context.Background())
	waitReady(t, w)
	eventually(t, "current", func() bool {
		v, _ := readerGauges(t, reg)
		return v["backflip_reader_stale"] == 0
	})
	v, _ = readerGauges(t, reg)
	heard := v["backflip_reader_last_heard_timestamp_seconds"]
	if heard < float64(start.UnixNano())/1e9 || heard > float64(time.Now().UnixNano())/1e9 {
		t.Errorf("last heard %v is not between the reader's start and now", heard)
	}
	if v["backflip_reader_revision"] != float64(w.Revision()) || w.Revision() == 0 {
		t.Errorf("revision %v, reader at %d", v["backflip_reader_revision"], w.Revision())
	}

	// Cut off: stale, and the last-heard time stops moving.
	proxy.Blackhole()
	eventually(t, "stale while cut off", func() bool {
		v, _ := readerGauges(t, reg)
		return v["backflip_reader_stale"] == 1
	})
	v, _ = readerGauges(t, reg)
	cutHeard := v["backflip_reader_last_heard_timestamp_seconds"]
	time.Sleep(300 * time.Millisecond)
	if v, _ := readerGauges(t, reg); v["backflip_reader_last_heard_timestamp_seconds"] != cutHeard {
		t.Errorf("last heard moved while cut off: %v → %v", cutHeard, v["backflip_reader_last_heard_timestamp_seconds"])
	}

	// Back: current, later last-heard time, the flip's revision.
	res := f.flip()
	proxy.Unblackhole()
	eventually(t, "current again", func() bool {
		v, _ := readerGauges(t, reg)
		return v["backflip_reader_stale"] == 0 && v["backflip_reader_revision"] >= float64(res.Revision) &&
			v["backflip_reader_last_heard_timestamp_seconds"] > cutHeard
	})

	// Close unregisters: the next reader of this process registers anew.
	w.Close()
	if v, _ := readerGauges(t, reg); len(v) != 0 {
		t.Fatalf("metrics left after Close: %v", v)
	}
	w2, err := NewWatcher(WatcherConfig{Client: srv.Client(t), Prefix: testPrefix, Logger: zap.NewNop(), Registerer: reg})
	if err != nil {
		t.Fatalf("a reader after Close: %v", err)
	}
	w2.Close()

	// Without a Registerer: no metrics, nothing fails.
	w3, err := NewWatcher(WatcherConfig{Client: srv.Client(t), Prefix: testPrefix, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	w3.Close()
}
