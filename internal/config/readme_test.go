package config

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// updateREADME rewrites the configuration reference in README.md:
//
//	go test ./internal/config -run TestREADME -update
var updateREADME = flag.Bool("update", false, "rewrite the configuration reference in README.md from the config struct")

const (
	readmePath   = "../../README.md"
	readmeBegin  = "<!-- config:begin -->"
	readmeEnd    = "<!-- config:end -->"
	readmeUpdate = "go test ./internal/config -run TestREADME -update"
)

// TestREADME keeps the README's configuration reference generated from the
// config struct: the block between the config markers must be what
// renderConfigTable makes of Vars (the envconfig, default and desc tags).
func TestREADME(t *testing.T) {
	data, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	head, block, tail, err := cutConfigBlock(data)
	if err != nil {
		t.Fatalf("README.md: %v (the configuration reference sits between %s and %s on lines of their own)", err, readmeBegin, readmeEnd)
	}
	want := renderConfigTable(Vars())
	if string(block) == want {
		return
	}
	if *updateREADME {
		out := make([]byte, 0, len(data)+len(want))
		out = append(append(append(out, head...), want...), tail...)
		if err := os.WriteFile(readmePath, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the configuration reference in README.md (%d variables)", len(Vars()))
		return
	}
	t.Fatalf("README.md's configuration reference is out of date with internal/config (the struct's envconfig, default and desc tags); run `%s`\n%s",
		readmeUpdate, lineDiff(string(block), want))
}

// cutConfigBlock splits the README into what comes up to and including the
// begin marker's line, the block, and what follows from the end marker's
// line on. Each marker must appear exactly once, begin before end.
func cutConfigBlock(data []byte) (head, block, tail []byte, err error) {
	for _, m := range []string{readmeBegin, readmeEnd} {
		if n := bytes.Count(data, []byte(m)); n != 1 {
			return nil, nil, nil, fmt.Errorf("marker %s appears %d times, want once", m, n)
		}
	}
	b := bytes.Index(data, []byte(readmeBegin))
	e := bytes.Index(data, []byte(readmeEnd))
	nl := bytes.IndexByte(data[b:], '\n')
	if e < b || nl < 0 || b+nl+1 > e {
		return nil, nil, nil, fmt.Errorf("%s must be on a line before %s", readmeBegin, readmeEnd)
	}
	start := b + nl + 1
	return data[:start], data[start:e], data[e:], nil
}

// varName matches a variable named in a description, to show it as code.
var varName = regexp.MustCompile(`\bBACKFLIP_[A-Z0-9_]+\b`)

// renderConfigTable is the README's configuration reference: one Markdown
// table row per variable, in declaration order (so grouped as Config is).
func renderConfigTable(vars []Var) string {
	var b strings.Builder
	b.WriteString("| variable | type | default | meaning |\n")
	b.WriteString("|---|---|---|---|\n")
	for _, v := range vars {
		def := "—"
		if v.Default != "" {
			def = "`" + v.Default + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, v.Type, def, markdownText(v.Desc))
	}
	return b.String()
}

// markdownText makes a description safe in a table cell and shows the
// variables it names as code.
func markdownText(s string) string {
	s = strings.NewReplacer("|", `\|`, "*", `\*`, "<", "&lt;", "\n", " ").Replace(s)
	return varName.ReplaceAllString(s, "`$0`")
}

// lineDiff lists the lines only in got (-) and only in want (+), enough to
// see what drifted.
func lineDiff(got, want string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for sc := bufio.NewScanner(strings.NewReader(s)); sc.Scan(); {
			m[sc.Text()] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var b strings.Builder
	for sc := bufio.NewScanner(strings.NewReader(got)); sc.Scan(); {
		if !w[sc.Text()] {
			fmt.Fprintf(&b, "- %s\n", sc.Text())
		}
	}
	for sc := bufio.NewScanner(strings.NewReader(want)); sc.Scan(); {
		if !g[sc.Text()] {
			fmt.Fprintf(&b, "+ %s\n", sc.Text())
		}
	}
	if b.Len() == 0 {
		return "(the lines are the same; their order or blank lines differ)"
	}
	return b.String()
}

func TestRenderConfigTable(t *testing.T) {
	got := renderConfigTable([]Var{
		{Name: "BACKFLIP_A", Type: typeDuration, Default: "5s", Desc: "wait; see BACKFLIP_B"},
		{Name: "BACKFLIP_B", Type: typeList, Desc: "globs such as inc-*, or a|b"},
	})
	want := "| variable | type | default | meaning |\n|---|---|---|---|\n" +
		"| `BACKFLIP_A` | duration | `5s` | wait; see `BACKFLIP_B` |\n" +
		"| `BACKFLIP_B` | list | — | globs such as inc-\\*, or a\\|b |\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if n := strings.Count(renderConfigTable(Vars()), "\n"); n != len(Vars())+2 {
		t.Fatalf("%d lines for %d variables", n, len(Vars()))
	}
}

// TestREADMERuntimeRecipe keeps the shell signing line the README shows for
// runtimes in other languages identical to the one in
// fleet/runtime/PROTOCOL.md, which fleet/runtime's tests run against Sign.
func TestREADMERuntimeRecipe(t *testing.T) {
	recipes := func(path string) []string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for sc := bufio.NewScanner(bytes.NewReader(data)); sc.Scan(); {
			if line := sc.Text(); strings.HasPrefix(line, `sig="v1=$(printf`) {
				out = append(out, line)
			}
		}
		return out
	}
	tested := recipes("../../fleet/runtime/PROTOCOL.md")
	if len(tested) != 1 {
		t.Fatalf("fleet/runtime/PROTOCOL.md has %d sig=... lines, want 1", len(tested))
	}
	shown := recipes(readmePath)
	if len(shown) == 0 {
		t.Fatal("README.md shows no sig=... line for runtimes in other languages")
	}
	for _, line := range shown {
		if line != tested[0] {
			t.Errorf("README.md signs with\n  %s\nbut the recipe fleet/runtime tests is\n  %s", line, tested[0])
		}
	}
}
