package drills

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/commands"

	_ "time/tzdata" // schedules name time zones; a minimal host may have no zoneinfo
)

// Keys builds the drill keys under one prefix (BACKFLIP_ETCD_PREFIX).
type Keys struct{ Prefix string }

// Schedules is the prefix of every schedule.
func (k Keys) Schedules() string { return k.Prefix + "/drills/schedules/" }

// Schedule is the key of a route's schedule; the route must be validated.
func (k Keys) Schedule(route string) string { return k.Schedules() + route }

// Runs is the prefix of a route's run records.
func (k Keys) Runs(route string) string { return k.Prefix + "/drills/runs/" + route + "/" }

// Run is the key of the run scheduled at t (unix seconds), created with
// CreateRevision == 0 before the run starts: exactly one run per scheduled
// time, whichever replica leads.
func (k Keys) Run(route string, scheduled int64) string {
	return k.Runs(route) + itoa(scheduled)
}

// Announcements is the prefix of announcement records (one per scheduled
// run and offset, created with CreateRevision == 0 so a leader change never
// announces twice).
func (k Keys) Announcements(route string) string {
	return k.Prefix + "/drills/announcements/" + route + "/"
}

// Schedule is the value at drills/schedules/<route> (contract shape, plus
// created_at and skip).
type Schedule struct {
	Cron string `json:"cron"`
	// Announce are the offsets before each run at which the drill is
	// announced (default ["24h","15m"]).
	Announce  []string  `json:"announce"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Skip is the unix time of a scheduled run that /drill skip cancelled
	// (0 when none).
	Skip int64 `json:"skip,omitempty"`
	// SkippedBy is who asked for Skip (the actor id); it becomes the actor
	// of the run's drill.skipped event.
	SkippedBy string `json:"skipped_by,omitempty"`
}

// Run states recorded at drills/runs/<route>/<scheduled-unix>.
const (
	RunStarted    = "started"
	RunCompleted  = "completed"
	RunFailed     = "failed"
	RunSuperseded = "superseded"
	RunSkipped    = "skipped"
	RunRefused    = "refused"
)

// RunRecord is the value at drills/runs/<route>/<scheduled-unix>.
type RunRecord struct {
	Route     string    `json:"route"`
	Scheduled time.Time `json:"scheduled"`
	State     string    `json:"state"`
	// Owner is the lease (hex) of the replica that started the run.
	Owner      string    `json:"owner"`
	Op         string    `json:"op,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Detail     string    `json:"detail,omitempty"`
}

// Announcer posts drill announcements and scheduled drills' reports in chat
// (the bot implements it over Slack; the terminal in `backflip dev`).
type Announcer interface {
	Announce(ctx context.Context, channel, text string) error
}

// Config is what a drills Service needs. Commands, Etcd and Owner are
// required.
type Config struct {
	Etcd   commands.Etcd
	Prefix string
	// Commands runs the drill's flips (DrillFlip) and reads status.
	Commands *commands.Service
	// Warm runs the verification canary on the rolled-back version.
	Warm commands.WarmChecker
	// Owner is the replica's liveness lease (run records name it).
	Owner commands.Lessee
	// DB reads drill history for calibration and charts; nil means none.
	DB audit.DBTX
	// Announcer and AnnounceChannel (BACKFLIP_ANNOUNCE_CHANNEL) carry the
	// announcements; a nil Announcer logs them only.
	Announcer       Announcer
	AnnounceChannel string
	// VerifyWindow (DRILL_VERIFY_WINDOW, 30s), QuietPeriod
	// (DRILL_QUIET_PERIOD, 24h) and SLO (ROLLBACK_SLO, 90s).
	VerifyWindow time.Duration
	QuietPeriod  time.Duration
	SLO          time.Duration
	// Late is how late a scheduled run may start (default 10 minutes);
	// later ones are recorded drill.skipped and announced instead.
	Late   time.Duration
	Logger *zap.Logger
	Now    func() time.Time
	// Registerer, when set, gets
	// backflip_drill_last_success_timestamp_seconds{route}, set when a
	// drill completes on this replica and by Service.LoadMetrics from the
	// audit database. Nil: no metrics.
	Registerer prometheus.Registerer
}

func (c *Config) defaults() error {
	if c.Etcd == nil || c.Commands == nil || c.Owner == nil {
		return errors.New("drills: Config.Etcd, Commands and Owner are required")
	}
	if c.VerifyWindow <= 0 {
		c.VerifyWindow = 30 * time.Second
	}
	if c.QuietPeriod <= 0 {
		c.QuietPeriod = 24 * time.Hour
	}
	if c.SLO <= 0 {
		c.SLO = 90 * time.Second
	}
	if c.Late <= 0 {
		c.Late = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
