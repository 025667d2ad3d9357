package faults

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// The linearizability model: one register per route holding (active,
// previous, kind, epoch). Operations are rollback(to or the default
// target, expected epoch or none), promote(version, expected epoch or
// none) and read(status); each one's output is what its operator was
// told. A step is legal only if that answer is the one backflip gives in
// the register's state at the operation's linearization point:
//
//   - completed: the request resolves to a change in that state (expected
//     epoch, if any, is the current one; a default target is the previous
//     version and the last change was not a rollback; the target is not
//     the active version), and the answer names the change (from, to, the
//     new epoch). The register moves.
//   - refused: the refusal's reason holds in that state (already rolled
//     back, no previous version, already on the target), or, for "not
//     warm", the request would otherwise change the route and the scenario
//     makes that target cold. Nothing moves.
//   - conflict: the epoch the request was guarded on (its expected epoch,
//     or the one it read when it had none) is not the current one.
//   - failed: nothing moves (the answer said nothing changed).
//   - unknown (the answer says the change may or may not have happened, or
//     the replica was killed): the register may stay or move as completed
//     would; the operation is open-ended (its return time is the end of
//     time), since such a change can land after the answer.
//   - read: the answer is the register.
//
// The register starts empty; each route's first operation is a synthetic
// init that sets it to the route as the scenario found it.

// mInput is an operation's input.
type mInput struct {
	Kind        callKind
	Route       string
	To          string
	ExpectEpoch int64
	Init        regState // kindInit
}

// routeModel is the model; cold says whether a not-warm refusal of
// route@version is legitimate in the scenario.
func routeModel(cold func(route, version string) bool) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			for _, op := range history {
				r := op.Input.(mInput).Route
				by[r] = append(by[r], op)
			}
			out := make([][]porcupine.Operation, 0, len(by))
			for _, k := range sortedKeys(by) {
				out = append(out, by[k])
			}
			return out
		},
		Init: func() []any { return []any{regState{}} },
		Step: func(state, in, out any) []any {
			return step(state.(regState), in.(mInput), out.(output), cold)
		},
		DescribeOperation: func(input, out any) string {
			in, o := input.(mInput), out.(output)
			return fmt.Sprintf("%s %s %s expect %d → %s %s", in.Kind, in.Route, dashIfEmpty(in.To), in.ExpectEpoch, o.Kind, describeOut(o))
		},
		DescribeState: func(state any) string { return state.(regState).String() },
	}
	return nm.ToModel()
}

func describeOut(o output) string {
	switch o.Kind {
	case outCompleted:
		return fmt.Sprintf("%s→%s epoch %d", o.From, o.To, o.Epoch)
	case outRefused:
		return o.Class
	case outConflict:
		return fmt.Sprintf("seen epoch %d", o.Seen)
	case outRead:
		return o.State.String()
	}
	return ""
}

// resolve is what a request does in state s: the state after it and
// "apply", or s and why not ("conflict" or a refusal class).
func resolve(s regState, in mInput) (regState, string) {
	if in.ExpectEpoch != 0 && in.ExpectEpoch != s.Epoch {
		return s, "conflict"
	}
	to, kind := in.To, routing.KindPromote
	if in.Kind == kindRollback {
		kind = routing.KindRollback
		if to == "" {
			switch {
			case s.Previous == "":
				return s, refNoPrevious
			case s.Kind == routing.KindRollback || s.Kind == routing.KindDrill:
				return s, refAlreadyRolledBack
			}
			to = s.Previous
		}
	}
	if to == s.Active {
		return s, refAlreadyOn
	}
	return regState{Active: to, Previous: s.Active, Kind: kind, Epoch: s.Epoch + 1}, "apply"
}

// step is the model's step: the states the register may be in after the
// operation, none when its output is impossible in s.
func step(s regState, in mInput, out output, cold func(route, version string) bool) []any {
	if in.Kind == kindInit {
		if s == (regState{}) {
			return []any{in.Init}
		}
		return nil
	}
	if s.Epoch == 0 {
		return nil // before the route's init
	}
	if in.Kind == kindRead {
		if out.Kind == outFailed || out.State == s {
			return []any{s}
		}
		return nil
	}
	next, verdict := resolve(s, in)
	switch out.Kind {
	case outCompleted:
		if verdict == "apply" && out.Epoch == next.Epoch && out.From == s.Active && out.To == next.Active {
			return []any{next}
		}
	case outRefused:
		if out.Class == refNotWarm {
			if verdict == "apply" && cold(in.Route, next.Active) {
				return []any{s}
			}
			return nil
		}
		if verdict == out.Class {
			return []any{s}
		}
	case outConflict:
		if out.Seen != 0 && out.Seen != s.Epoch {
			return []any{s}
		}
	case outFailed:
		return []any{s}
	case outUnknown:
		if verdict == "apply" {
			return []any{s, next}
		}
		return []any{s}
	}
	return nil
}

// operations turns a history into porcupine's operations: a synthetic init
// per route, then every call (open-ended when its outcome is unknown).
func operations(h *history, calls []*call) []porcupine.Operation {
	var ops []porcupine.Operation
	for _, route := range sortedKeys(h.inits) {
		ops = append(ops, porcupine.Operation{ClientId: 0, Input: mInput{Kind: kindInit, Route: route, Init: stateOf(h.inits[route].Config)},
			Call: -2, Output: output{}, Return: -1})
	}
	for _, c := range calls {
		call, ret := interval(c)
		ops = append(ops, porcupine.Operation{ClientId: c.Operator + 1,
			Input: mInput{Kind: c.Kind, Route: c.Route, To: c.To, ExpectEpoch: c.ExpectEpoch},
			Call:  call, Output: c.Out, Return: ret, Metadata: c.String()})
	}
	return ops
}

// interval is when a call may have taken effect. An unknown outcome is
// open-ended. Otherwise it is the call's own interval, narrowed to the
// phase that decided the answer when the op reported it (its live
// progress, which the operator sees too): a refusal or a stale revision is
// decided by the resolve phase's read, a change or a lost race by the flip
// transaction (and, after a lost reply, its re-reads), all inside those
// phases. Narrower intervals only make the check stricter, and keep
// porcupine's search small when many calls start at once.
func interval(c *call) (call, ret int64) {
	call, ret = c.Call, c.Return
	switch {
	case c.Out.Kind == outUnknown:
		return call, math.MaxInt64
	case c.Out.atResolve && c.resolveAt != 0 && c.resolveEnd != 0:
		return c.resolveAt, c.resolveEnd
	case (c.Out.Kind == outCompleted || c.Out.Kind == outConflict) && !c.Out.atResolve && c.flipAt != 0 && c.flipEnd != 0:
		return c.flipAt, c.flipEnd
	}
	return call, ret
}

// checkLinearizable checks the history against the model, and on failure
// writes porcupine's visualization and names it.
func checkLinearizable(t *testing.T, h *history, calls []*call, cold func(route, version string) bool) {
	t.Helper()
	model := routeModel(cold)
	ops := operations(h, calls)
	timeout := 2 * time.Minute
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	t.Logf("linearizability of %d operations: %s (checked in %v)", len(ops), res, time.Since(start).Round(time.Millisecond))
	if res == porcupine.Ok {
		return
	}
	dir, err := os.MkdirTemp("", "backflip-faults-")
	path := filepath.Join(dir, sanitize(t.Name())+".html")
	if err == nil {
		err = porcupine.VisualizePath(model, info, path)
	}
	if err != nil {
		path = "(visualization not written: " + err.Error() + ")"
	}
	var b strings.Builder
	byRoute := map[string][]*call{}
	for _, c := range calls {
		byRoute[c.Route] = append(byRoute[c.Route], c)
	}
	for _, route := range sortedKeys(byRoute) {
		cs := byRoute[route]
		sort.Slice(cs, func(i, j int) bool { return cs[i].Call < cs[j].Call })
		fmt.Fprintf(&b, "\n%s from %s:", route, stateOf(h.inits[route].Config))
		for _, c := range cs {
			fmt.Fprintf(&b, "\n  %s", c)
		}
	}
	if res == porcupine.Unknown {
		t.Errorf("the linearizability check did not finish within %v; visualization: %s%s", timeout, path, b.String())
		return
	}
	t.Errorf("route histories are not linearizable: some operator was told something no order of the operations explains; visualization: %s%s", path, b.String())
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}
