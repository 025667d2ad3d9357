package faults

import (
	"testing"

	"github.com/anishathalye/porcupine"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// TestModel shows the linearizability check has teeth: it accepts
// histories a correct backflip produces, and rejects each kind of wrong
// answer the fault scenarios look for.
func TestModel(t *testing.T) {
	init := regState{Active: "v42", Previous: "v41", Kind: routing.KindPromote, Epoch: 2}
	rolled := regState{Active: "v41", Previous: "v42", Kind: routing.KindRollback, Epoch: 3}
	noCold := func(string, string) bool { return false }
	op := func(client int, kind callKind, to string, expect int64, call, ret int64, out output) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: mInput{Kind: kind, Route: "r", To: to, ExpectEpoch: expect}, Call: call, Output: out, Return: ret}
	}
	initOp := porcupine.Operation{Input: mInput{Kind: kindInit, Route: "r", Init: init}, Call: -2, Output: output{}, Return: -1}
	completed := output{Kind: outCompleted, Epoch: 3, From: "v42", To: "v41"}
	forever := int64(1 << 62)
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"RollbackThenRead", []porcupine.Operation{
			op(1, kindRollback, "", 2, 0, 10, completed),
			op(2, kindRead, "", 0, 11, 12, output{Kind: outRead, State: rolled}),
		}, true},
		{"ReadBeforeRollbackLands", []porcupine.Operation{
			op(1, kindRollback, "", 0, 0, 10, completed),
			op(2, kindRead, "", 0, 1, 2, output{Kind: outRead, State: init}),
		}, true},
		{"SecondDefaultRollbackRefused", []porcupine.Operation{
			op(1, kindRollback, "", 0, 0, 10, completed),
			op(2, kindRollback, "", 0, 11, 12, output{Kind: outRefused, Class: refAlreadyRolledBack}),
		}, true},
		{"AlreadyRolledBackRefusedAfterAPromote", []porcupine.Operation{
			op(2, kindRollback, "", 0, 0, 1, output{Kind: outRefused, Class: refAlreadyRolledBack}),
		}, false},
		{"TwoWinnersOfOneRevision", []porcupine.Operation{
			op(1, kindRollback, "", 2, 0, 10, completed),
			op(2, kindPromote, "v43", 2, 0, 10, output{Kind: outCompleted, Epoch: 3, From: "v42", To: "v43"}),
		}, false},
		{"StaleExpectRevConflicts", []porcupine.Operation{
			op(1, kindRollback, "", 2, 0, 10, completed),
			op(2, kindPromote, "v43", 2, 11, 12, output{Kind: outConflict, Seen: 2}),
		}, true},
		{"ConflictWithoutAChange", []porcupine.Operation{
			op(2, kindPromote, "v43", 2, 0, 1, output{Kind: outConflict, Seen: 2}),
		}, false},
		{"FailedButApplied", []porcupine.Operation{
			op(1, kindRollback, "", 2, 0, 10, output{Kind: outFailed}),
			op(2, kindRead, "", 0, 11, 12, output{Kind: outRead, State: rolled}),
		}, false},
		{"UnknownLandsAfterItsAnswer", []porcupine.Operation{
			op(1, kindRollback, "", 2, 0, forever, output{Kind: outUnknown}),
			op(2, kindRead, "", 0, 11, 12, output{Kind: outRead, State: init}),
			op(2, kindRead, "", 0, 13, 14, output{Kind: outRead, State: rolled}),
		}, true},
		{"UnknownNeverLands", []porcupine.Operation{
			op(1, kindRollback, "", 2, 0, forever, output{Kind: outUnknown}),
			op(2, kindRead, "", 0, 13, 14, output{Kind: outRead, State: init}),
		}, true},
		{"UnknownCannotApplyTwice", []porcupine.Operation{
			op(1, kindRollback, "", 2, 0, forever, output{Kind: outUnknown}),
			op(2, kindRead, "", 0, 13, 14, output{Kind: outRead, State: regState{Active: "v42", Previous: "v41", Kind: routing.KindRollback, Epoch: 4}}),
		}, false},
		{"NotWarmOnlyWhenCold", []porcupine.Operation{
			op(1, kindRollback, "", 0, 0, 1, output{Kind: outRefused, Class: refNotWarm}),
		}, false},
		{"CompletedReportsWrongEpoch", []porcupine.Operation{
			op(1, kindRollback, "", 0, 0, 1, output{Kind: outCompleted, Epoch: 4, From: "v42", To: "v41"}),
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok := porcupine.CheckOperations(routeModel(noCold), append([]porcupine.Operation{initOp}, tc.ops...))
			if ok != tc.ok {
				t.Errorf("linearizable = %v, want %v", ok, tc.ok)
			}
		})
	}
}
