package runtime

import (
	"errors"
	"testing"

	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

func TestSDKAbortRule(t *testing.T) {
	s := &routeState{epoch: 9, active: "v1", rolledAwayAt: map[string]int64{"v2": 5, "v3": 8}, gapAt: 7}
	for _, tc := range []struct {
		name    string
		version string
		epoch   int64
		aborts  bool
	}{
		{"RolledAwayAfterPin", "v2", 4, true},
		{"RolledAwayBeforePin", "v2", 7, false},
		{"GapAfterPinOtherVersion", "v4", 6, true},
		{"GapAfterPinActiveVersion", "v1", 6, false},
		{"GapBeforePin", "v4", 7, false},
		{"LatestRollbackWins", "v3", 7, true},
		{"Unaffected", "v1", 9, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.aborts(tc.version, tc.epoch); got != tc.aborts {
				t.Errorf("aborts(%s, %d) = %v; want %v", tc.version, tc.epoch, got, tc.aborts)
			}
		})
	}
}

// TestSDKEpochGap applies views directly, as the reader would after a
// re-read that skipped epochs.
func TestSDKEpochGap(t *testing.T) {
	srv := etcdtest.Start(t)
	in, err := NewInstance(InstanceConfig{ID: "gap", Client: srv.Client(t), Prefix: "/backflip", Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	view := func(epoch int64, kind routing.Kind, from, active, op string) routing.View {
		return routing.View{RouteConfig: routing.RouteConfig{Route: "r", Kind: kind, From: from, Active: active, Epoch: epoch, Op: op}, Revision: epoch * 10}
	}
	in.apply(view(1, routing.KindPromote, "", "v1", "op-1"))
	onV1, err := in.Begin("r")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("PromoteAcrossGapAbortsConservatively", func(t *testing.T) {
		// Epochs 2 and 3 were never seen: v1 may have been rolled away from.
		in.apply(view(3, routing.KindPromote, "v9", "v2", "op-3"))
		if err := onV1.Checkpoint(t.Context()); !errors.Is(err, ErrRolledBack) {
			t.Fatalf("checkpoint across a gap = %v; want ErrRolledBack", err)
		}
		in.ackMu.Lock()
		n := len(in.ackPending)
		in.ackMu.Unlock()
		if n != 0 {
			t.Errorf("%d acks queued for a promote; want none", n)
		}
	})

	t.Run("ActiveVersionSurvivesContiguousChange", func(t *testing.T) {
		onV2, err := in.Begin("r")
		if err != nil {
			t.Fatal(err)
		}
		in.apply(view(4, routing.KindPromote, "v2", "v5", "op-4"))
		if err := onV2.Checkpoint(t.Context()); err != nil {
			t.Fatalf("checkpoint after a promote = %v", err)
		}
		if err := onV2.Done(); err != nil {
			t.Fatalf("done after a promote = %v", err)
		}
	})

	t.Run("RollbackAcrossGapIsAcked", func(t *testing.T) {
		onV5, err := in.Begin("r")
		if err != nil {
			t.Fatal(err)
		}
		in.apply(view(6, routing.KindRollback, "v6", "v2", "op-6"))
		var rb *RolledBackError
		if err := onV5.Done(); !errors.As(err, &rb) || rb.ReissueOn != "v2" {
			t.Fatalf("done across a gap = %v; want a rollback to v2", err)
		}
		in.ackMu.Lock()
		rec, ok := in.ackPending["op-6"]
		in.ackMu.Unlock()
		if !ok || rec.InFlight != 1 || rec.Aborted != 1 || rec.AppliedRev != 60 || rec.Reissued == nil || *rec.Reissued != 0 {
			t.Errorf("ack = %+v (queued %v); want inflight 1, aborted 1, reissued 0 (abandoned outside Run)", rec, ok)
		}
	})
}
