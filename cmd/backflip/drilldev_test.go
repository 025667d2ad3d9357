package main

import (
	"strings"
	"testing"
)

// TestDevDrill watches drills from the terminal chat of `backflip dev`: the
// cold rollback target of embed-small is a finding, and a drill of
// chat-70b rolls back to v41, holds, flips back to v42 and reports both
// directions; status then shows the return.
func TestDevDrill(t *testing.T) {
	env := map[string]string{"BACKFLIP_DRILL_QUIET_PERIOD": "1ms", "BACKFLIP_DRILL_VERIFY_WINDOW": "500ms"}
	s := startDev(t, env, "--state-dir", t.TempDir(), "--routers", "2", "--nodes", "3", "--rps", "5")
	s.waitFor("backflip dev is running.", 1)
	s.say("/drill run embed-small", "drill of embed-small")
	s.say("/drill run chat-70b", "drill of chat-70b completed in ")
	s.say("/rollback status chat-70b", "chat-70b · v42 · drill_return by ")
	out := s.end()
	for _, want := range []string{
		"drill of embed-small FAILED at warm: embed-small@v6, the rollback target, is not warm (0/3 nodes, 0/3 GPUs warm)",
		"A real rollback now would be a cold start; no drill ran.",
		": v42 → v41 → v42 (op ",
		"\n• chat-70b drill: rolled back v42 → v41 in ",
		"\n• verified: 2/2 routers, 2/2 runtimes acknowledged",
		"canary on v41: 3/3 nodes, 12/12 GPUs warm",
		"\n• held ",
		" on v41: no other change to the route",
		"\n• chat-70b drill: returned v41 → v42 in ",
		"\n• calibration: ",
		"✅ rollback target v41 warm (3/3 nodes, 12/12 GPUs)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// After a drill's return a default rollback is allowed again: status
	// must not say it is refused.
	if strings.Contains(out, "a rollback without --to is refused") {
		t.Errorf("status says a default rollback is refused after a drill's return")
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
