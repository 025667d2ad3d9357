package commands

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/backflip-dev/backflip/audit"
)

// TestRollbackWithPostgresDown: the audit database is unreachable while a
// rollback runs (the shipper keeps failing to insert). The rollback has
// the same outcome, its events wait in the etcd outbox, and they arrive in
// Postgres once it is back.
func TestRollbackWithPostgresDown(t *testing.T) {
	e := newFleetEnv(t, fleetOpts{rps: 20})
	r := e.replica(t, "bot-1")
	ctx := testCtx(t)

	// A pool whose server refuses connections: what the bot's pool is
	// while Postgres is down.
	down, err := pgxpool.New(ctx, "postgres://backflip@127.0.0.1:1/audit?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	sh, err := audit.NewShipper(audit.ShipperConfig{Etcd: e.cli, Prefix: fleetPrefix, DB: down, Logger: e.log.Named("shipper-down"), MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	shipped := make(chan struct{})
	go func() { defer close(shipped); _ = sh.Run(sctx) }()

	res, err := r.svc.Rollback(ctx, RollbackRequest{Origin: from(alice), Route: "chat-70b", Reason: "postgres is down too"}, nil)
	if err != nil || res.Outcome != OutcomeCompleted || !res.Audit.Queued {
		t.Fatalf("rollback with Postgres down: %v %+v", err, res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for sh.Backlog() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("shipper backlog %d: %s", sh.Backlog(), sh.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-shipped
	if got := kinds(e.outbox(t)[res.Op]); got != "model.rollback/completed model.rollback/flipped" {
		t.Fatalf("outbox while Postgres is down: %s", got)
	}
	// Postgres is back: the events arrive, once each.
	e.ship(t)
	rows, err := audit.Op(ctx, e.db, mustUUID(t, res.Op))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d audit rows, want 2", len(rows))
	}
}
