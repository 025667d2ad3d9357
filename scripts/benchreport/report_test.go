package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// row returns the report's table row whose first cell starts with prefix.
func row(t *testing.T, report, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "| "+prefix) {
			return l
		}
	}
	t.Fatalf("no row starting with %q in:\n%s", prefix, report)
	return ""
}

func TestReport(t *testing.T) {
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := res.stat("BenchmarkRequestBoundaryCheck/Valid", "ns/op"); !ok || s.n != 2 || s.lo != 1.154 || s.hi != 1.254 || s.med != 1.204 {
		t.Fatalf("two runs of Valid: %+v, %v", s, ok)
	}
	var out bytes.Buffer
	writeReport(&out, res, "testdata/bench.txt")
	rep := out.String()
	for _, want := range []string{"0123456789ab", "Test CPU", "| 2 |"} {
		if !strings.Contains(rep, want) {
			t.Errorf("machine section lacks %q", want)
		}
	}
	for _, c := range []struct{ prefix, want []string }{
		// Median of two runs with its range, the floor from the same run,
		// and the verdict against ≤ 2 ns, 0 allocs.
		{[]string{"Request-boundary check"}, []string{"1.20 ns/op (1.15–1.25)", "0.500 ns/op", "2.41×", "✅ met"}},
		// The benchmark's own ratio is used, and 1.39 misses ≤ 1.2×.
		{[]string{"Flip → last router applied (reader-apply), 1000 routers, one etcd client"}, []string{"p50 84.9 ms", "61.0 ms", "1.39×", "❌ missed"}},
		// The floor added up from two other benchmarks: 40 + 160 ms, and
		// 400 ms against it is 2×; 400 ms misses p50 ≤ 250 ms.
		{[]string{"Rollback end to end without the runtime's re-issue work (command → routers converged → abort acks → audit queued), 1000 GPU nodes, 1000 routers (one process, so"},
			[]string{"p50 400 ms", "200 ms (1000 GETs 40 ms + raw watch-and-ack round trip 160 ms)", "2×; 1/225", "❌ missed"}},
		// Not in the file.
		{[]string{"Rollback end to end without the runtime's re-issue work (command → routers converged → abort acks → audit queued), 1000 GPU nodes, 1000 routers (one process each), 50 runtimes, 10,000 requests in flight, Postgres down"},
			[]string{"not run"}},
		{[]string{"Slack slash-command ack, signed HTTP on loopback, real Bot handler"}, []string{"p99 1.35 ms", "✅ met"}},
	} {
		r := row(t, rep, c.prefix[0])
		for _, want := range c.want {
			if !strings.Contains(r, want) {
				t.Errorf("row %q lacks %q:\n%s", c.prefix[0], want, r)
			}
		}
	}

	out.Reset()
	writeReadme(&out, res)
	readme := out.String()
	if !strings.Contains(readme, "BENCHMARKS.md") || !strings.Contains(readme, "❌") || !strings.Contains(readme, "✅") {
		t.Errorf("README table lacks the link or the verdicts:\n%s", readme)
	}
}

func TestParseRejectsEmpty(t *testing.T) {
	if _, err := parse(strings.NewReader("# date: x\nnothing here\n")); err == nil {
		t.Fatal("a file without results parsed")
	}
}
