package faults

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/pgtest"
)

// pg is the Postgres the scenarios take their audit databases from (the
// Postgres scenario starts one of its own, which it stops and restarts).
var pg *pgtest.Server

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		// A subprocess of TestReplicaKilledAtEveryPhase: a bot replica
		// that kills itself during its op.
		os.Exit(crashChild())
	}
	os.Exit(pgtest.RunTests(m, "faults", pgtest.Options{Template: migrate}, func(s *pgtest.Server) { pg = s }))
}

func migrate(ctx context.Context, conn *pgx.Conn) error {
	_, err := audit.Migrate(ctx, conn)
	return err
}

// modeEnv selects the suite's size: unset (or "bounded") for the form
// `make test` runs, "full" for the figures (`make faults`).
const modeEnv = "BACKFLIP_FAULTS"

// sizes are the counts of one form of the suite.
type sizes struct {
	full bool
	// leaderKills is how many times scenario 1 hard-stops the leader
	// (alternately during a flip and during router convergence).
	leaderKills int
	// partitions are how long scenario 2's partitions last, in turn; the
	// long ones outlast the replicas' owner lease.
	partitions []time.Duration
	// compactionCuts is how many times scenario 3 cuts the watchers off
	// across a compaction.
	compactionCuts int
	// pgOps is the number of operations of scenario 4.
	pgOps int
	// hungNodes of hungFleet nodes are hung in scenario 5; hungOps is the
	// number of rollbacks and promotions it makes.
	hungFleet, hungNodes, hungOps int
	// killPhases lists the progress states scenario 6 kills a replica at.
	killAt []killPoint
	// concurrent is the number of operations scenario 7 starts at once,
	// in waves waves.
	concurrent, waves int
	// opsPerOperator bounds the background operators of scenarios 1–3.
	opsPerOperator int
}

func sizing(tb testing.TB) sizes {
	tb.Helper()
	switch v := os.Getenv(modeEnv); v {
	case "", "bounded":
		return sizes{
			leaderKills: 2, partitions: []time.Duration{2500 * time.Millisecond, 6 * time.Second}, compactionCuts: 1,
			pgOps: 100, hungFleet: 10, hungNodes: 1, hungOps: 8,
			killAt:     donePoints(),
			concurrent: 24, waves: 2, opsPerOperator: 200,
		}
	case "full":
		return sizes{
			full:        true,
			leaderKills: 6, compactionCuts: 5,
			partitions: []time.Duration{3 * time.Second, 7 * time.Second, 3 * time.Second, 7 * time.Second, 2 * time.Second, 12 * time.Second},
			pgOps:      1000, hungFleet: 20, hungNodes: 2, hungOps: 40,
			killAt:     append(runningPoints(), donePoints()...),
			concurrent: 100, waves: 3, opsPerOperator: 1000,
		}
	default:
		tb.Fatalf("%s=%q: want unset, bounded or full", modeEnv, v)
		panic(fmt.Sprintf("unreachable: %s", v))
	}
}
