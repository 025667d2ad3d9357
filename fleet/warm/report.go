package warm

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrTargetNotWarm is the refusal: the target version is not warm on enough
// GPUs. Check returns it as a *NotWarmError carrying the report.
var ErrTargetNotWarm = errors.New("target not warm")

// State is one node's warm state for the target version.
type State string

// The node states, from most to least in need of an operator's eye (the
// order Report.Nodes is sorted in).
const (
	// StateCold: the agent answered and the version is not warm (not
	// loaded, not ready, or its canary failed or was over budget).
	StateCold State = "cold"
	// StateUnreachable: no usable answer from the agent: connection
	// refused, no answer by the deadline, a non-200 status, or a reply that
	// is malformed, too large or about another node or version.
	StateUnreachable State = "unreachable"
	// StateStale: the agent's observation was older than WARM_MAX_AGE and
	// asking for a fresh probe did not produce a recent one in time.
	StateStale State = "stale"
	// StateNotServing: the node's record lists the version but its agent
	// says it has no server for it (the record is out of date).
	StateNotServing State = "not-serving"
	// StateWarm: loaded, ready, and the canary answered within budget,
	// observed at most WARM_MAX_AGE ago.
	StateWarm State = "warm"
)

func (s State) rank() int {
	switch s {
	case StateCold:
		return 0
	case StateUnreachable:
		return 1
	case StateStale:
		return 2
	case StateNotServing:
		return 3
	case StateWarm:
		return 5
	}
	return 4
}

// NodeResult is one target node's answer.
type NodeResult struct {
	Node  string `json:"node"`
	URL   string `json:"url"`
	State State  `json:"state"`
	// GPUs is what the node's record registers for the target version.
	GPUs int `json:"gpus"`
	// WarmGPUs is what counts towards the decision: the GPUs the agent
	// reports warm, never more than GPUs (a record is the registered
	// capacity; an agent cannot claim more in a reply). Zero unless warm.
	WarmGPUs int `json:"warm_gpus"`
	// CanaryMS is the agent's last canary latency for the version.
	CanaryMS float64 `json:"canary_ms,omitempty"`
	// InFlight is the inference server's running requests, where exposed.
	InFlight *int `json:"inflight,omitempty"`
	// AgeMS is how old the agent's observation was when it answered.
	AgeMS int64 `json:"age_ms,omitempty"`
	// Fresh is true when the agent was asked for a fresh probe (fresh=1)
	// because its cached observation was older than WARM_MAX_AGE.
	Fresh bool `json:"fresh,omitempty"`
	// Latency is how long the agent took to answer (all requests).
	Latency time.Duration `json:"latency_ns"`
	// Reason says, for a person, why the node is in its state ("" when warm
	// on all its GPUs). It may quote the agent's own error text, cleaned of
	// control characters and clipped; renderers must still escape it.
	Reason string `json:"reason,omitempty"`
}

// MalformedRecord is a node record that could not be used.
type MalformedRecord struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

// Baseline says what the needed GPUs were computed from.
type Baseline string

const (
	// BaselineActive: the GPUs registered for the route's active version.
	BaselineActive Baseline = "active"
	// BaselineTarget: no GPUs are registered for the active version, so
	// the target's own registered GPUs are the baseline.
	BaselineTarget Baseline = "target"
)

// Report is the outcome of one warm check.
type Report struct {
	Route  string `json:"route"`
	Active string `json:"active"`
	Target string `json:"target"`
	// Warm is the decision: WarmGPUs >= NeededGPUs (and NeededGPUs >= 1).
	Warm bool `json:"warm"`
	// Quorum is the share applied, and QuorumFrom "policy" or "default".
	Quorum     float64 `json:"quorum"`
	QuorumFrom string  `json:"quorum_from"`
	// Baseline says which version's registered GPUs BaselineGPUs counts.
	Baseline     Baseline `json:"baseline"`
	BaselineGPUs int      `json:"baseline_gpus"`
	// ActiveNodes and ActiveGPUs: what the fleet registers for the active
	// version (the capacity the target has to carry).
	ActiveNodes int `json:"active_nodes"`
	ActiveGPUs  int `json:"active_gpus"`
	// NeededGPUs is ceil(Quorum × BaselineGPUs), at least 1.
	NeededGPUs int `json:"needed_gpus"`
	// TargetNodes and TargetGPUs: what the fleet registers for the target;
	// WarmNodes and WarmGPUs: what of it is warm.
	TargetNodes int `json:"target_nodes"`
	TargetGPUs  int `json:"target_gpus"`
	WarmNodes   int `json:"warm_nodes"`
	WarmGPUs    int `json:"warm_gpus"`
	// Reason explains a refusal in one sentence ("" when warm).
	Reason string `json:"reason,omitempty"`
	// Nodes lists every node registered for the target, cold first.
	Nodes []NodeResult `json:"nodes"`
	// Malformed lists node records that could not be decoded; they count
	// for nothing, and the other nodes are still checked.
	Malformed []MalformedRecord `json:"malformed,omitempty"`
	// Revision is the etcd revision the fleet was read at.
	Revision  int64         `json:"revision"`
	CheckedAt time.Time     `json:"checked_at"`
	Duration  time.Duration `json:"duration_ns"`
}

// Summary is the short form used in the timing report and in warm-keep
// alerts: "24/24 nodes, 96/96 GPUs warm".
func (r *Report) Summary() string {
	return fmt.Sprintf("%d/%d nodes, %d/%d GPUs warm", r.WarmNodes, r.TargetNodes, r.WarmGPUs, r.TargetGPUs)
}

// Decision explains the arithmetic in one line, e.g. "72 of 96 GPUs needed
// (quorum 0.75 of 96 GPUs on active v42), 70 warm".
func (r *Report) Decision() string {
	var base string
	switch r.Baseline {
	case BaselineTarget:
		base = fmt.Sprintf("%d GPUs registered for %s itself, as %s has none", r.BaselineGPUs, r.Target, r.Active)
		if r.Active == "" {
			base = fmt.Sprintf("%d GPUs registered for %s itself, as the route has no active version yet", r.BaselineGPUs, r.Target)
		}
	default:
		base = fmt.Sprintf("%d GPUs on active %s", r.BaselineGPUs, r.Active)
	}
	return fmt.Sprintf("%d GPUs needed (quorum %s of %s), %d warm",
		r.NeededGPUs, formatQuorum(r.Quorum), base, r.WarmGPUs)
}

// NotWarm returns the nodes that are not warm, cold first.
func (r *Report) NotWarm() []NodeResult {
	var out []NodeResult
	for _, n := range r.Nodes {
		if n.State != StateWarm {
			out = append(out, n)
		}
	}
	return out
}

// String is the report for a person: the decision, every node that is not
// warm with its reason, the count of warm ones, and malformed records.
func (r *Report) String() string {
	var b strings.Builder
	verdict := "warm"
	if !r.Warm {
		verdict = "NOT warm"
	}
	fmt.Fprintf(&b, "%s → %s: %s, %s; %s (checked in %s)\n", r.Route, r.Target, verdict, r.Summary(), r.Decision(), r.Duration.Round(time.Millisecond))
	if r.Reason != "" {
		fmt.Fprintf(&b, "  %s\n", r.Reason)
	}
	warm := 0
	for _, n := range r.Nodes {
		if n.State == StateWarm && n.Reason == "" {
			warm++
			continue
		}
		fmt.Fprintf(&b, "  %-11s %s (%d GPUs): %s\n", n.State, n.Node, n.GPUs, n.Reason)
	}
	switch {
	case warm == 1:
		b.WriteString("  1 other node warm\n")
	case warm > 1:
		fmt.Fprintf(&b, "  %d other nodes warm\n", warm)
	}
	for _, m := range r.Malformed {
		fmt.Fprintf(&b, "  malformed record %s: %s\n", m.Key, m.Error)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// sortNodes orders nodes cold first, then unreachable, stale, not-serving
// and warm, and by name within a state.
func sortNodes(nodes []NodeResult) {
	sort.Slice(nodes, func(i, j int) bool {
		a, b := nodes[i], nodes[j]
		if a.State.rank() != b.State.rank() {
			return a.State.rank() < b.State.rank()
		}
		return a.Node < b.Node
	})
}

// NotWarmError is the refusal Check returns when the target is not warm.
// errors.Is(err, ErrTargetNotWarm) is true for it.
type NotWarmError struct {
	Report Report
}

// maxListed bounds the nodes an error message names.
const maxListed = 5

func (e *NotWarmError) Error() string {
	r := &e.Report
	var b strings.Builder
	fmt.Fprintf(&b, "%s: target %s is not warm: %s; %s", r.Route, r.Target, r.Summary(), r.Decision())
	if r.Reason != "" {
		fmt.Fprintf(&b, "; %s", r.Reason)
	}
	cold := r.NotWarm()
	for i, n := range cold {
		if i == maxListed {
			fmt.Fprintf(&b, ", and %d more", len(cold)-maxListed)
			break
		}
		sep := ", "
		if i == 0 {
			sep = "; not warm: "
		}
		fmt.Fprintf(&b, "%s%s %s (%s)", sep, n.Node, n.State, n.Reason)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrTargetNotWarm) true.
func (e *NotWarmError) Is(target error) bool { return target == ErrTargetNotWarm }

// formatQuorum prints 1 as "1.0" and 0.75 as "0.75".
func formatQuorum(q float64) string {
	s := fmt.Sprintf("%g", q)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// maxReasonText bounds text quoted from an agent in a reason.
const maxReasonText = 300

// clean makes text from a peer safe to put in a one-line reason: control
// characters and invalid UTF-8 become spaces or U+FFFD, and it is clipped.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return clip(strings.TrimSpace(s), maxReasonText)
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// formatMS prints a latency in milliseconds as "800ms" or "2.1s".
func formatMS(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
