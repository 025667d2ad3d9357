package config

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestBotEnvExample keeps configs/bot.env.example in step with the config
// struct: every variable it names exists, and every variable serve reads is
// in it (the agent's and the simulated routers' own are not).
func TestBotEnvExample(t *testing.T) {
	f, err := os.Open("../../configs/bot.env.example")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	named := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "#"))
		name, _, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(name, Prefix) || strings.ContainsAny(name, " \t") {
			continue
		}
		named[name] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, v := range Vars() {
		known[v.Name] = true
		if v.Group != "Agent" && v.Group != "Reader" && !named[v.Name] && v.Name != "BACKFLIP_SLACK_API_URL" {
			t.Errorf("configs/bot.env.example does not mention %s", v.Name)
		}
	}
	for name := range named {
		if !known[name] {
			t.Errorf("configs/bot.env.example names %s, which backflip does not read", name)
		}
	}
}
