package commands

import (
	"fmt"
	"time"
)

// Transport says where a request came from.
type Transport string

// The transports.
const (
	TransportSlack    Transport = "slack"
	TransportTerminal Transport = "terminal"
	TransportCLI      Transport = "cli"
	// TransportSystem is backflip itself: drills run by the scheduler, op
	// recovery.
	TransportSystem Transport = "system"
)

// Actor is who asked. ID is what authorization and audit use: a Slack user
// ID ("U0123ABCD"), or "cli:<os-user>@<host>" for backflipctl, or
// "system:<job>" for backflip's own jobs. Name is for people (a Slack
// display name, the etcd user of backflipctl); it is never trusted for a
// decision.
type Actor struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

func (a Actor) String() string {
	if a.Name != "" && a.Name != a.ID {
		return fmt.Sprintf("%s (%s)", a.Name, a.ID)
	}
	return a.ID
}

// Mention is how a chat message names the actor: <@U…> for a Slack user ID,
// the plain ID otherwise.
func (a Actor) Mention() string {
	if isSlackUserID(a.ID) {
		return "<@" + a.ID + ">"
	}
	return a.ID
}

func isSlackUserID(id string) bool {
	if len(id) < 2 || len(id) > 32 || (id[0] != 'U' && id[0] != 'W') {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Channel is where a request was typed. Name may be "" or "privategroup"
// (Slack's placeholder for private channels) when the transport could not
// resolve it; authorization then matches by ID only.
type Channel struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// Origin is everything about a request that is not the command itself.
type Origin struct {
	Actor     Actor
	Channel   Channel
	Transport Transport
	// TS is the chat message the op reports into (Slack message ts), ""
	// when there is none yet. It is recorded in the op record so recovery
	// can say so in the same thread.
	TS string
	// IdemKey makes the request idempotent: a second request with the same
	// key (a retried delivery, a double click on a card, a second replica
	// handling the same event) returns the first one's result and never
	// flips twice. "" means the request is not deduplicated.
	IdemKey string
	// Trusted is set by backflipctl only: the etcd credentials it runs
	// with are the gate (etcd roles), so Slack user lists do not apply.
	Trusted bool
	// Received is when the transport received the request; zero means
	// when the use case started. The total time of a rollback counts from
	// it.
	Received time.Time
}

// Phase is one timed step of a rollback or promotion.
type Phase string

// The phases, in order.
const (
	PhaseResolve  Phase = "resolve"
	PhaseWarm     Phase = "warm"
	PhaseFlip     Phase = "flip"
	PhaseRouters  Phase = "routers"
	PhaseInFlight Phase = "inflight"
	PhaseAudit    Phase = "audit"
)

// PhaseState is where a phase is.
type PhaseState string

// The states a progress report can give.
const (
	StateRunning PhaseState = "running"
	StateDone    PhaseState = "done"
	StateFailed  PhaseState = "failed"
	StateSkipped PhaseState = "skipped"
)

// Progress is one report of a running operation, for a chat message that
// updates live.
type Progress struct {
	Op    string
	Route string
	Phase Phase
	State PhaseState
	// Took is the phase's duration (Done, Failed, Skipped).
	Took time.Duration
	// Detail is a short line for a person, e.g. "24/24 nodes, 96/96 GPUs warm".
	Detail string
	// From and To are the versions as far as resolved ("" before).
	From, To string
}

// ProgressFunc receives progress reports. It is called on the operation's
// goroutine, in order; it must return quickly (hand the report to another
// goroutine to talk to a slow chat API). A nil ProgressFunc is allowed.
type ProgressFunc func(Progress)

func (f ProgressFunc) report(p Progress) {
	if f != nil {
		f(p)
	}
}

// PhaseTiming is one phase's duration.
type PhaseTiming struct {
	Phase Phase         `json:"phase"`
	Took  time.Duration `json:"took_ns"`
}
