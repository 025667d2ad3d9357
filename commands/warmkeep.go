package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// warmKeepNamespace makes a warm-keep event's ids from its route and
// revision, so the same state change recorded twice (a monitor restarted
// on another replica) is one audit row.
var warmKeepNamespace = uuid.MustParse("5b1f0c2e-7f43-4e0b-9d7e-3c2a5d1b8e61")

// RecordWarmKeep audits a warm-keep state change: a target that went cold
// is a warmkeep.cold_target event (warm again is only announced).
func (s *Service) RecordWarmKeep(ctx context.Context, ev warm.Event) error {
	if ev.State != warm.EventCold {
		return nil
	}
	key := fmt.Sprintf("%s@%d", ev.Route, ev.Revision)
	opID := uuid.NewSHA1(warmKeepNamespace, []byte("op:"+key))
	details, _ := json.Marshal(map[string]any{"summary": ev.Report.Summary(), "reason": ev.Report.Reason, "decision": ev.Report.Decision()})
	e := audit.Event{
		EventID: uuid.NewSHA1(warmKeepNamespace, []byte("event:"+key)), OpID: opID, Kind: audit.KindColdTarget,
		Route: ev.Route, FromVersion: ev.Active, ToVersion: ev.Target, Actor: "system:warm-keep",
		Outcome: "cold", EtcdRevision: ev.Revision, Details: details, SchemaVersion: audit.SchemaVersion, OccurredAt: ev.At.UTC(),
	}
	if e.OccurredAt.IsZero() {
		e.OccurredAt = s.now().UTC()
	}
	put, err := audit.OutboxOp(s.audit, 0, e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = s.etcd.Do(ctx, put)
	return err
}
