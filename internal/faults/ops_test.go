package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/routing"
)

// callKind is what an operator asked.
type callKind string

const (
	kindInit     callKind = "init" // the route as the scenario found it (not a call)
	kindRead     callKind = "read"
	kindRollback callKind = "rollback"
	kindPromote  callKind = "promote"
)

// outKind is what the operator was told, as the model sees it.
type outKind string

const (
	// outCompleted: the route changed (outcome completed or degraded).
	outCompleted outKind = "completed"
	// outRefused: nothing changed, for a reason (Class) that must hold in
	// the state the request was decided in.
	outRefused outKind = "refused"
	// outConflict: nothing changed because the route was not at the
	// revision the request was guarded on (Seen).
	outConflict outKind = "conflict"
	// outFailed: nothing changed (the answer says so) because a
	// dependency failed.
	outFailed outKind = "failed"
	// outUnknown: the answer says the change may or may not have happened,
	// or no answer came (a killed replica): possibly applied, at any time
	// after the call.
	outUnknown outKind = "unknown"
	// outRead: a status read, State is what it showed.
	outRead outKind = "read"
)

// Refusal classes, from the operator's message.
const (
	refAlreadyRolledBack = "already-rolled-back"
	refNoPrevious        = "no-previous"
	refAlreadyOn         = "already-on"
	refNotWarm           = "not-warm"
)

// regState is one route's register: what the model tracks.
type regState struct {
	Active, Previous string
	Kind             routing.Kind
	Epoch            int64
}

func stateOf(c routing.RouteConfig) regState {
	return regState{Active: c.Active, Previous: c.Previous, Kind: c.Kind, Epoch: c.Epoch}
}

func (s regState) String() string {
	return fmt.Sprintf("%s(prev %s, %s, epoch %d)", s.Active, dashIfEmpty(s.Previous), s.Kind, s.Epoch)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// call is one operator request and its answer.
type call struct {
	ID       int
	Operator int
	Replica  string
	Route    string
	Kind     callKind
	// To is the version asked for; "" is a default-target rollback.
	To string
	// ExpectRev is the revision passed as --expect-rev (0: --now);
	// ExpectEpoch the epoch the operator saw at that revision.
	ExpectRev, ExpectEpoch int64
	// Op is the op id minted for the request (known even when the call
	// never answers).
	Op string
	// Call and Return are nanoseconds since the scenario's start.
	Call, Return int64
	// Timeout is the call's deadline (its context's).
	Timeout time.Duration
	// Killed: the replica running it was killed; no answer will come.
	Killed bool
	Res    *commands.Result
	Err    error
	// Read is a status read's answer.
	Read    regState
	ReadRev int64
	// Out is the answer as the model sees it (set by classify); Bad says
	// why the answer is not one a correct backflip gives ("" when fine).
	Out output
	Bad string
	// answered is set when the call returned.
	answered bool
	// resolveAt, resolveEnd, flipAt and flipEnd are when the op reported
	// its resolve and flip phases running and ended (0: not reported).
	// The op decides inside them: a refusal or a stale revision at its
	// resolve read, a change or a lost race at its flip transaction; the
	// history's intervals are narrowed to them (see operations).
	resolveAt, resolveEnd, flipAt, flipEnd int64
	// warmEnded is set when the op's warm phase reported its end.
	warmEnded atomic.Bool
}

// output is an answer as the model sees it.
type output struct {
	Kind     outKind
	Class    string // outRefused
	Epoch    int64  // outCompleted: the epoch after the change
	From, To string // outCompleted
	Seen     int64  // outConflict: the epoch the request was guarded on
	State    regState
	// atResolve: the answer was decided by the resolve phase's read (a
	// refusal, a stale revision), not by the flip.
	atResolve bool
}

func (c *call) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d op%d@%s %s %s", c.ID, c.Operator+1, c.Replica, c.Kind, c.Route)
	switch c.Kind {
	case kindRollback:
		fmt.Fprintf(&b, " --to %s", dashIfEmpty(c.To))
	case kindPromote:
		fmt.Fprintf(&b, " %s", c.To)
	}
	if c.Kind != kindRead {
		fmt.Fprintf(&b, " expect-rev %d (epoch %d) op %s", c.ExpectRev, c.ExpectEpoch, c.Op)
	}
	fmt.Fprintf(&b, " [%s → ", time.Duration(c.Call))
	if c.Killed {
		b.WriteString("killed]")
	} else {
		fmt.Fprintf(&b, "%s]", time.Duration(c.Return))
	}
	switch {
	case c.Kind == kindRead && c.Err == nil:
		fmt.Fprintf(&b, " = %s at rev %d", c.Read, c.ReadRev)
	case c.Err != nil:
		fmt.Fprintf(&b, " = %s: %s", commands.ErrorCode(c.Err), commands.ErrorMessage(c.Err))
	case c.Res != nil:
		fmt.Fprintf(&b, " = %s %s→%s epoch %d rev %d", c.Res.Outcome, c.Res.From, c.Res.To, c.Res.Epoch, c.Res.Revision)
	}
	if c.Out.Kind != "" {
		fmt.Fprintf(&b, " {%s", c.Out.Kind)
		if c.Out.Class != "" {
			fmt.Fprintf(&b, " %s", c.Out.Class)
		}
		if c.Out.Seen != 0 {
			fmt.Fprintf(&b, " seen epoch %d", c.Out.Seen)
		}
		b.WriteString("}")
	}
	if c.Bad != "" {
		fmt.Fprintf(&b, " BAD: %s", c.Bad)
	}
	return b.String()
}

// history is every call of a scenario.
type history struct {
	rec *recorder
	t0  time.Time

	mu    sync.Mutex
	calls []*call
	inits map[string]change
}

func newHistory(rec *recorder) *history {
	return &history{rec: rec, t0: time.Now(), inits: map[string]change{}}
}

func (h *history) now() int64 { return int64(time.Since(h.t0)) }

func (h *history) init(route string, c change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inits[route] = c
}

func (h *history) begin(c *call) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.ID = len(h.calls)
	c.Call = h.now()
	h.calls = append(h.calls, c)
}

func (h *history) end(c *call) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.Return = h.now()
	c.answered = true
}

func (h *history) all() []*call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*call(nil), h.calls...)
}

// invoke runs one call under its operator's deadline (the replica's
// timeout), and reports the call if no answer has come by then plus what
// the phases after a flip may take.
func (e *env) invoke(r *replica, c *call, fn func(ctx context.Context)) {
	c.Timeout = r.timeout
	e.hist.begin(c)
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	by := r.timeout + afterFlip
	late := time.AfterFunc(by, func() { e.noAnswer(c, by) })
	fn(ctx)
	late.Stop()
	e.hist.end(c)
}

var stacksOnce sync.Once

// noAnswer reports a call still without an answer at its deadline, with
// every goroutine's stack (once per test binary).
func (e *env) noAnswer(c *call, by time.Duration) {
	e.t.Errorf("no answer within %v: %s", by, c)
	stacksOnce.Do(func() { _ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2) })
}

// read is `/rollback status <route>` by operator i through r.
func (e *env) read(r *replica, i int, route string) *call {
	c := &call{Operator: i, Replica: r.name, Route: route, Kind: kindRead}
	e.invoke(r, c, func(ctx context.Context) {
		rep, err := r.svc.Status(ctx, origin(i), route)
		c.Err = err
		if err == nil {
			if len(rep.Routes) != 1 {
				c.Err = fmt.Errorf("status of %s: %d routes", route, len(rep.Routes))
				return
			}
			c.Read, c.ReadRev = stateOf(rep.Routes[0].Config), rep.Routes[0].Revision
		}
	})
	return c
}

// change is a rollback (to "" for the default target) or a promotion by
// operator i through r.
func (e *env) change(r *replica, i int, kind callKind, route, to string, expectRev, expectEpoch int64, progress commands.ProgressFunc) *call {
	c := &call{Operator: i, Replica: r.name, Route: route, Kind: kind, To: to, ExpectRev: expectRev, ExpectEpoch: expectEpoch,
		Op: newOpID()}
	watch := func(p commands.Progress) {
		now := e.hist.now()
		switch {
		case p.Phase == commands.PhaseResolve && p.State == commands.StateRunning:
			c.resolveAt = now
		case p.Phase == commands.PhaseResolve:
			c.resolveEnd = now
		case p.Phase == commands.PhaseFlip && p.State == commands.StateRunning:
			c.flipAt = now
		case p.Phase == commands.PhaseFlip:
			c.flipEnd = now
		case p.Phase == commands.PhaseWarm && p.State != commands.StateRunning:
			c.warmEnded.Store(true)
		}
		if progress != nil {
			progress(p)
		}
	}
	e.invoke(r, c, func(ctx context.Context) {
		if kind == kindPromote {
			c.Res, c.Err = r.svc.Promote(ctx, commands.PromoteRequest{Origin: origin(i), Route: route, Version: to,
				Reason: "fault suite", ExpectRev: expectRev, Op: c.Op}, watch)
			return
		}
		c.Res, c.Err = r.svc.Rollback(ctx, commands.RollbackRequest{Origin: origin(i), Route: route, To: to,
			Reason: "fault suite", ExpectRev: expectRev, Op: c.Op}, watch)
	})
	return c
}

// classify turns a call's answer into the model's output, and says when
// the answer is not one a correct backflip gives. It runs after the
// scenario, when the recorder knows every revision.
func (e *env) classify(c *call) {
	if c.Kind == kindRead {
		if c.Err != nil {
			c.Out = output{Kind: outFailed}
			if code := commands.ErrorCode(c.Err); code != commands.EUNAVAILABLE {
				c.Bad = "a status read failed with code " + code
			}
			return
		}
		c.Out = output{Kind: outRead, State: c.Read}
		return
	}
	if c.Killed {
		c.Out = output{Kind: outUnknown}
		return
	}
	bad := func(format string, args ...any) {
		c.Bad = fmt.Sprintf(format, args...)
		c.Out = output{Kind: outUnknown}
	}
	res, err := c.Res, c.Err
	if err == nil {
		switch {
		case res == nil:
			bad("no result and no error")
		case res.Outcome == commands.OutcomeCompleted || res.Outcome == commands.OutcomeDegraded:
			c.Out = output{Kind: outCompleted, Epoch: res.Epoch, From: res.From, To: res.To}
		default:
			bad("no error but outcome %q", res.Outcome)
		}
		return
	}
	if res == nil {
		// The contract: a Result whenever the request was understood,
		// refused or failed included.
		bad("an error without a result: %v", err)
		return
	}
	code, msg := commands.ErrorCode(err), commands.ErrorMessage(err)
	switch code {
	case commands.ECONFLICT:
		switch {
		case strings.Contains(msg, "changed since you looked"):
			c.Out = output{Kind: outConflict, Seen: c.ExpectEpoch, atResolve: true}
		case strings.Contains(msg, "was changed by someone else first"):
			seen := c.ExpectEpoch
			if seen == 0 {
				ep, ok := e.rec.epochAt(c.Route, res.ExpectRev)
				if !ok {
					bad("a conflict guarded on revision %d, which never held %s", res.ExpectRev, c.Route)
					return
				}
				seen = ep
			}
			c.Out = output{Kind: outConflict, Seen: seen}
		default:
			bad("an unexpected conflict: %s", msg)
		}
	case commands.EREFUSED:
		class := refusalClass(msg)
		if class == "" {
			bad("an unexpected refusal: %s", msg)
			return
		}
		c.Out = output{Kind: outRefused, Class: class, atResolve: true}
	case commands.EUNAVAILABLE:
		if strings.Contains(msg, "may or may not have happened") {
			c.Out = output{Kind: outUnknown}
			return
		}
		c.Out = output{Kind: outFailed}
	default:
		bad("code %q: %v", code, err)
	}
}

// refusalClass says which refusal a message is ("" when none of the
// expected ones).
func refusalClass(msg string) string {
	switch {
	case strings.Contains(msg, "a second rollback without --to would undo it"):
		return refAlreadyRolledBack
	case strings.Contains(msg, "has no previous version to roll back to"):
		return refNoPrevious
	case strings.Contains(msg, "; nothing to do"):
		return refAlreadyOn
	case strings.Contains(msg, "is not warm, so this would be a cold start"), strings.Contains(msg, "no node serves"):
		return refNotWarm
	}
	return ""
}

// operator is one person issuing requests through one replica: status
// reads, default and explicit rollbacks and promotions, guarded by the
// revision it last read or not (--now), in a seeded random mix.
type operator struct {
	e     *env
	i     int
	r     *replica
	rng   *rand.Rand
	seen  map[string]*call // route → last successful read
	calls int
	// progress, if set, receives every progress report of its changes.
	progress commands.ProgressFunc
}

func (e *env) operator(i int, r *replica, seed uint64) *operator {
	return &operator{e: e, i: i, r: r, rng: rand.New(rand.NewPCG(seed, uint64(i))), seen: map[string]*call{}}
}

// versions lists the versions a route's requests name.
func (e *env) versions(route string) []string {
	for _, s := range e.specs {
		if s.Route == route {
			return []string{s.Active, s.Previous}
		}
	}
	return nil
}

// act makes one random request on route.
func (o *operator) act(route string) *call {
	o.calls++
	vs := o.e.versions(route)
	last := o.seen[route]
	guard := func() (int64, int64) {
		if last != nil && o.rng.IntN(10) < 7 {
			return last.ReadRev, last.Read.Epoch
		}
		return 0, 0
	}
	switch n := o.rng.IntN(100); {
	case n < 25 || last == nil:
		c := o.e.read(o.r, o.i, route)
		if c.Err == nil {
			o.seen[route] = c
		}
		return c
	case n < 60:
		rev, ep := guard()
		return o.e.change(o.r, o.i, kindRollback, route, "", rev, ep, o.progress)
	case n < 75:
		rev, ep := guard()
		return o.e.change(o.r, o.i, kindRollback, route, vs[o.rng.IntN(len(vs))], rev, ep, o.progress)
	default:
		rev, ep := guard()
		return o.e.change(o.r, o.i, kindPromote, route, vs[o.rng.IntN(len(vs))], rev, ep, o.progress)
	}
}

// loop acts on random routes until stop is closed or max calls are made,
// with a short random pause between calls, and none while the env holds
// the operators.
func (o *operator) loop(stop <-chan struct{}, max int) {
	for o.calls < max {
		select {
		case <-stop:
			return
		default:
		}
		if !o.e.hold.Load() {
			o.act(o.e.specs[o.rng.IntN(len(o.e.specs))].Route)
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(10+o.rng.IntN(40)) * time.Millisecond):
		}
	}
}

// operate runs operators (one per replica in turn) in the background
// until the returned stop function is called, which waits for their last
// calls to be answered.
func (e *env) operate(n int, replicas []*replica, seed uint64, progress commands.ProgressFunc) (stop func()) {
	ch := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		o := e.operator(i, replicas[i%len(replicas)], seed)
		o.progress = progress
		wg.Go(func() { o.loop(ch, e.sz.opsPerOperator) })
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(ch) })
		e.waitCalls(&wg)
	}
}

// waitCalls waits for wg, failing the test (with every goroutine's stack)
// if calls are still unanswered past answerBy.
func (e *env) waitCalls(wg *sync.WaitGroup) {
	e.t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(answerBy + 10*time.Second):
		stacksOnce.Do(func() { _ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2) })
		e.t.Fatalf("operators still waiting for answers after %v", answerBy+10*time.Second)
	}
}

func newOpID() string { return uuid.NewString() }
