package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/backflip-dev/backflip/audit"
	"github.com/backflip-dev/backflip/internal/etcdtest"
	"github.com/backflip-dev/backflip/internal/pgtest"
	"github.com/backflip-dev/backflip/internal/simfleet"
	"github.com/backflip-dev/backflip/internal/slackfake"
)

// TestServeEndToEnd starts `backflip serve` in HTTP mode as an operator
// would — configured by environment only — against an embedded etcd, a real
// audit database, a simulated fleet and a fake Slack, then rolls back
// through a signed slash command and checks the health endpoints.
func TestServeEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pg, err := pgtest.Start(ctx, pgtest.Options{Template: func(ctx context.Context, conn *pgx.Conn) error {
		_, err := audit.Migrate(ctx, conn)
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	db := pg.NewDatabase(t)
	// A drill of chat-70b completed before this replica started: /metrics
	// reports it from the audit database.
	drilledAt := time.Now().Add(-72 * time.Hour).UTC().Truncate(time.Microsecond)
	seed, err := pgx.ConnectConfig(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	_, err = audit.InsertEvents(ctx, seed, []audit.Event{{EventID: uuid.New(), OpID: uuid.New(), Kind: audit.KindDrillCompleted,
		Route: "chat-70b", FromVersion: "v42", ToVersion: "v41", Actor: "system:drill-scheduler", Reason: "drill", Outcome: "completed",
		SchemaVersion: audit.SchemaVersion, OccurredAt: drilledAt}})
	seed.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	etcd := etcdtest.Start(t)
	fleet, err := simfleet.Start(ctx, simfleet.Config{Client: etcd.Client(t), Prefix: "/backflip", Nodes: 3, Routes: simfleet.DemoRoutes(), Routers: 2, Runtimes: 1,
		Traffic: simfleet.Traffic{RPS: 10, Steps: 2, StepDelay: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	slack := slackfake.New(t)
	slack.SetChannel("C0INC", "inc-1-latency", false, true)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const secret = "serve-signing-secret"
	env := map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS":       etcd.Endpoint(),
		"BACKFLIP_DATABASE_URL":         pg.URL(db.Database),
		"BACKFLIP_SLACK_MODE":           "http",
		"BACKFLIP_SLACK_BOT_TOKEN":      "xoxb-serve-test",
		"BACKFLIP_SLACK_SIGNING_SECRET": secret,
		"BACKFLIP_SLACK_API_URL":        slack.APIURL(),
		"BACKFLIP_INCIDENT_CHANNELS":    "inc-*",
		"BACKFLIP_OPS_CHANNEL":          "C0OPS",
		"BACKFLIP_ROLLBACK_USERS":       "U0ALICE",
		"BACKFLIP_AGENT_TOKEN":          fleet.AgentToken(),
		"BACKFLIP_RUNTIME_SECRET":       string(fleet.RuntimeSecret()),
		"BACKFLIP_HTTP_ADDR":            addr,
		"BACKFLIP_LOG_LEVEL":            "warn",
	}
	var stderr syncBuffer
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- newMain(env, strings.NewReader(""), io.Discard, &stderr).Run(sctx, []string{"serve"}) }()
	t.Cleanup(func() {
		stop()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d: %s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	base := "http://" + addr
	waitOK(t, base+"/readyz", &stderr)
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get(base + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}

	// The metrics the alerts rest on: this lone replica leads, the etcd
	// database size and quota, the warm state of each rollback target
	// (embed-small's previous version is not loaded), and the last drill
	// success loaded from the audit database.
	drilled := strconv.FormatFloat(float64(drilledAt.UnixNano())/1e9, 'g', -1, 64)
	waitMetrics(t, base+"/metrics", &stderr,
		"backflip_leader 1",
		`backflip_etcd_status_up{client_url="`+etcd.Endpoint()+`"} 1`,
		`backflip_etcd_db_size_bytes{client_url="`+etcd.Endpoint()+`",member=`,
		`backflip_etcd_db_size_in_use_bytes{client_url="`+etcd.Endpoint()+`",member=`,
		`backflip_etcd_quota_backend_bytes{client_url="`+etcd.Endpoint()+`",member=`,
		`backflip_rollback_target_warm{route="chat-70b"} 1`,
		`backflip_rollback_target_warm{route="embed-small"} 0`,
		`backflip_rollback_target_warm_ratio{route="chat-70b"} 1`,
		`backflip_drill_last_success_timestamp_seconds{route="chat-70b"} `+drilled,
	)

	form := url.Values{"command": {"/rollback"}, "text": {"chat-70b --now bad deploy"}, "user_id": {"U0ALICE"}, "user_name": {"alice"},
		"channel_id": {"C0INC"}, "channel_name": {"inc-1-latency"}, "response_url": {slack.ResponseURL("serve")}, "trigger_id": {"1.2.3"}}
	body := form.Encode()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:%s", ts, body)
	req, _ := http.NewRequest(http.MethodPost, base+"/slack/commands", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("slash command: %v %v", err, resp)
	}
	resp.Body.Close()
	slack.WaitFor(t, func([]slackfake.Post) bool {
		for _, p := range slack.Messages("C0INC") {
			if strings.Contains(p.Text, "rolled back v42 → v41") {
				return true
			}
		}
		return false
	}, 30*time.Second)
	// The elected replica's shipper moves the audit events to Postgres.
	conn, err := pgx.ConnectConfig(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE kind = 'model.rollback'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d model.rollback rows shipped, want 2; serve log:\n%s", n, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitMetrics waits until every line of the /metrics page at u starts
// with one of want.
func waitMetrics(t *testing.T, u string, log *syncBuffer, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var missing []string
	for {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %s", u, err, resp.Status)
		}
		missing = missing[:0]
		for _, w := range want {
			found := false
			for _, line := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(line, w) {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q:\n%s\nserve log:\n%s", missing, body, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitOK(t *testing.T, u string, log *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200 (%v); serve log:\n%s", u, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
