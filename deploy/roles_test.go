package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdModule is the module whose version the etcd server, the etcd image and
// the etcdctl the role test runs all follow.
const etcdModule = "go.etcd.io/etcd/server/v3"

// etcdVersion is the etcd version backflip builds with, from go.mod's
// requirement of the etcd server module, e.g. v3.7.3.
func etcdVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(etcdModule) + `\s+(v\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("go.mod does not require %s", etcdModule)
	}
	return string(m[1])
}

// etcdctl returns a real etcdctl binary of backflip's etcd version, built
// once and cached under the user cache directory (backflip/etcdctl-…). It
// never skips: without etcdctl the role script is untested, so the test
// fails and says why.
//
// `go install go.etcd.io/etcd/etcdctl/v3@version` refuses to build it (its
// go.mod has replace directives), so it is built in a throwaway module that
// requires it.
func etcdctl(t *testing.T) string {
	t.Helper()
	version := etcdVersion(t)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "backflip", fmt.Sprintf("etcdctl-%s-%s-%s", version, runtime.GOOS, runtime.GOARCH))
	bin := filepath.Join(dir, "etcdctl")
	if out, err := exec.Command(bin, "version").Output(); err == nil && strings.Contains(string(out), "etcdctl version: "+strings.TrimPrefix(version, "v")) {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("etcdctl cache: %v", err)
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		t.Fatalf("etcdctl cache: %v", err)
	}
	defer os.RemoveAll(work)
	goMod := "module backflip.local/etcdctl\n\ngo 1.26\n"
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(goMod), 0o644); err != nil {
		t.Fatal(err)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building etcdctl needs the go command: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tmp := filepath.Join(work, "etcdctl")
	for _, args := range [][]string{
		{"get", "go.etcd.io/etcd/etcdctl/v3@" + version},
		{"build", "-o", tmp, "go.etcd.io/etcd/etcdctl/v3"},
	} {
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GO111MODULE=on", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building etcdctl %s failed (go %s): %v\n%s\nThe role test needs a real etcdctl; it is built from the Go module proxy once and cached in %s.",
				version, strings.Join(args, " "), err, out, dir)
		}
	}
	// Rename is atomic: a concurrent build of the same version wins or
	// loses whole.
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatalf("etcdctl cache: %v", err)
	}
	return bin
}

// Users and passwords the role test creates.
var rolePasswords = map[string]string{
	"ETCD_ROOT_PASSWORD":    "root-pw-1",
	"ETCD_BOT_PASSWORD":     "bot-pw-1",
	"ETCD_CTL_PASSWORD":     "ctl-pw-1",
	"ETCD_AGENT_PASSWORD":   "agent-pw-1",
	"ETCD_ROUTER_PASSWORD":  "router-pw-1",
	"ETCD_RUNTIME_PASSWORD": "runtime-pw-1",
}

// runRoles runs roles.sh with a clean environment plus env; it returns the
// output and the error.
func runRoles(t *testing.T, env map[string]string) (string, error) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("roles.sh needs bash: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "etcd/roles.sh")
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ETCD") || strings.HasPrefix(k, "BACKFLIP_") {
			continue // the caller's etcd settings must not leak in
		}
		cmd.Env = append(cmd.Env, kv)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

// The script refuses to run without what it needs, before touching etcd.
func TestRolesScriptChecksItsInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no root password", with(rolePasswords, "ETCD_ROOT_PASSWORD", ""), "ETCD_ROOT_PASSWORD is required"},
		{"no bot password", with(rolePasswords, "ETCD_BOT_PASSWORD", ""), "ETCD_BOT_PASSWORD is required"},
		{"password with a space", with(rolePasswords, "ETCD_AGENT_PASSWORD", "a b"), "ETCD_AGENT_PASSWORD must not contain whitespace"},
		{"prefix with trailing slash", with(rolePasswords, "BACKFLIP_ETCD_PREFIX", "/backflip/"), "must not end with /"},
		{"relative prefix", with(rolePasswords, "BACKFLIP_ETCD_PREFIX", "backflip"), "must start with /"},
		{"no etcdctl", with(rolePasswords, "ETCDCTL", "/nonexistent/etcdctl"), "etcdctl not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runRoles(t, tc.env)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("roles.sh: err %v, output %q; want a failure saying %q", err, out, tc.want)
			}
		})
	}
}

// roles.sh applied to a real etcd, then each component's user doing its job
// and being refused what is not its job.
func TestRolesOnEtcdWithAuth(t *testing.T) {
	const prefix = "/bf-test" // not the default: the script must honour BACKFLIP_ETCD_PREFIX
	bin := etcdctl(t)
	endpoint := startEtcd(t)
	env := with(rolePasswords, "ETCDCTL", bin, "ETCDCTL_ENDPOINTS", endpoint, "BACKFLIP_ETCD_PREFIX", prefix)

	out, err := runRoles(t, env)
	if err != nil {
		t.Fatalf("roles.sh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "auth: enabled") {
		t.Fatalf("roles.sh did not enable auth:\n%s", out)
	}
	if strings.Contains(out, `"level":"warn"`) || strings.Contains(out, `"level":"error"`) {
		t.Errorf("roles.sh, first run, made etcdctl log warnings:\n%s", out)
	}
	// Idempotent: a second run, now with auth on, changes nothing and
	// succeeds.
	out, err = runRoles(t, env)
	if err != nil {
		t.Fatalf("roles.sh, second run: %v\n%s", err, out)
	}
	if strings.Contains(out, "created") || strings.Contains(out, "password set") || strings.Contains(out, `"level":`) {
		t.Errorf("roles.sh, second run, created or changed something, or etcdctl logged:\n%s", out)
	}
	t.Logf("roles.sh output (second run):\n%s", out)
	// A changed password is set on the next run, and only that one.
	passwords := with(rolePasswords, "ETCD_AGENT_PASSWORD", "agent-pw-2")
	out, err = runRoles(t, with(env, "ETCD_AGENT_PASSWORD", passwords["ETCD_AGENT_PASSWORD"]))
	if err != nil {
		t.Fatalf("roles.sh, third run: %v\n%s", err, out)
	}
	if strings.Count(out, "password set") != 1 || !strings.Contains(out, "user backflip-agent: password set") {
		t.Errorf("roles.sh, third run, with a new agent password: want only that password set:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := func(p string) string { return prefix + "/" + p }
	root := login(t, endpoint, "root", rolePasswords["ETCD_ROOT_PASSWORD"])
	if _, err := root.Put(ctx, key("routes/chat-70b"), `{"route":"chat-70b","active":"v42","previous":"v41"}`); err != nil {
		t.Fatalf("root put: %v", err)
	}
	if _, err := root.Put(ctx, key("ops/seed"), `{}`); err != nil {
		t.Fatalf("root put: %v", err)
	}

	t.Run("anonymous", func(t *testing.T) {
		anon := login(t, endpoint, "", "")
		_, err := anon.Get(ctx, key("routes/"), clientv3.WithPrefix())
		if !errors.Is(err, rpctypes.ErrUserEmpty) {
			t.Errorf("a client without credentials read routes/: err %v, want %v", err, rpctypes.ErrUserEmpty)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		_, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Username: "backflip-bot", Password: "nope", DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if !errors.Is(err, rpctypes.ErrAuthFailed) {
			t.Errorf("login with a wrong password: err %v, want %v", err, rpctypes.ErrAuthFailed)
		}
	})

	t.Run("agent", func(t *testing.T) {
		c := login(t, endpoint, "backflip-agent", passwords["ETCD_AGENT_PASSWORD"])
		lease := grant(ctx, t, c)
		mustOK(t, "put its node record under a lease", put(ctx, c, key("fleet/nodes/gpu-node-17"), lease))
		mustDeny(t, "write routes/", put(ctx, c, key("routes/chat-70b"), 0))
		mustDeny(t, "read routes/", get(ctx, c, key("routes/")))
		mustDeny(t, "write routers/", put(ctx, c, key("routers/r1"), 0))
		// Deregistration: revoking its lease deletes its record.
		_, err := c.Revoke(ctx, lease)
		mustOK(t, "revoke its lease", err)
	})

	t.Run("router", func(t *testing.T) {
		c := login(t, endpoint, "backflip-router", rolePasswords["ETCD_ROUTER_PASSWORD"])
		mustOK(t, "read routes/", get(ctx, c, key("routes/")))
		mustOK(t, "watch routes/", watchOnce(ctx, c, root, key("routes/"), key("routes/chat-70b")))
		lease := grant(ctx, t, c)
		mustOK(t, "publish its observed epochs in routers/", put(ctx, c, key("routers/router-1"), lease))
		mustDeny(t, "write routes/", put(ctx, c, key("routes/chat-70b"), 0))
		mustDeny(t, "read ops/", get(ctx, c, key("ops/")))
		mustDeny(t, "write fleet/nodes/", put(ctx, c, key("fleet/nodes/x"), 0))
	})

	t.Run("runtime", func(t *testing.T) {
		c := login(t, endpoint, "backflip-runtime", rolePasswords["ETCD_RUNTIME_PASSWORD"])
		mustOK(t, "read routes/", get(ctx, c, key("routes/")))
		mustOK(t, "read ops/", get(ctx, c, key("ops/")))
		lease := grant(ctx, t, c)
		mustOK(t, "write its instance record", put(ctx, c, key("runtime/instances/wf-1"), lease))
		mustOK(t, "write its ack", put(ctx, c, key("runtime/acks/op-1/wf-1"), lease))
		mustDeny(t, "write routes/", put(ctx, c, key("routes/chat-70b"), 0))
		mustDeny(t, "write ops/", put(ctx, c, key("ops/op-1"), 0))
		mustDeny(t, "write routers/", put(ctx, c, key("routers/r1"), 0))
	})

	// The bot and backflipctl: the flip transaction of a rollback, as
	// commands writes it (route guarded by its ModRevision, op under the
	// owner's lease, idempotency key created once, first audit event).
	flip := func(t *testing.T, c *clientv3.Client, op string) error {
		t.Helper()
		cur, err := c.Get(ctx, key("routes/chat-70b"))
		if err != nil {
			return err
		}
		if len(cur.Kvs) != 1 {
			t.Fatalf("routes/chat-70b: %d keys", len(cur.Kvs))
		}
		sess, err := concurrency.NewSession(c, concurrency.WithTTL(10), concurrency.WithContext(ctx))
		if err != nil {
			return err
		}
		defer sess.Close()
		resp, err := c.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key("routes/chat-70b")), "=", cur.Kvs[0].ModRevision),
				clientv3.Compare(clientv3.CreateRevision(key("idem/"+op)), "=", 0)).
			Then(
				clientv3.OpPut(key("routes/chat-70b"), `{"route":"chat-70b","active":"v41","previous":"v42","kind":"rollback"}`),
				clientv3.OpPut(key("ops/"+op), `{"kind":"rollback"}`, clientv3.WithLease(sess.Lease())),
				clientv3.OpPut(key("idem/"+op), op),
				clientv3.OpPut(key("audit/outbox/"+op+"/0"), `{}`),
			).Commit()
		if err == nil && !resp.Succeeded {
			t.Fatalf("flip %s: the transaction's compare failed", op)
		}
		return err
	}
	campaign := func(c *clientv3.Client) error {
		sess, err := concurrency.NewSession(c, concurrency.WithTTL(10), concurrency.WithContext(ctx))
		if err != nil {
			return err
		}
		defer sess.Close()
		el := concurrency.NewElection(sess, key("election/leader"))
		if err := el.Campaign(ctx, "replica-1"); err != nil {
			return err
		}
		return el.Resign(ctx)
	}

	t.Run("bot", func(t *testing.T) {
		c := login(t, endpoint, "backflip-bot", rolePasswords["ETCD_BOT_PASSWORD"])
		mustOK(t, "flip", flip(t, c, "op-bot"))
		mustOK(t, "campaign on election/leader", campaign(c))
		// What /readyz does.
		_, err := c.Get(ctx, key("readyz"), clientv3.WithCountOnly())
		mustOK(t, "read the readyz key", err)
		_, err = c.AlarmList(ctx)
		mustOK(t, "list alarms", err)
		mustOK(t, "read fleet/nodes/", get(ctx, c, key("fleet/nodes/")))
		mustOK(t, "read routers/", get(ctx, c, key("routers/")))
		mustOK(t, "read runtime/instances/", get(ctx, c, key("runtime/instances/")))
		lease := grant(ctx, t, c)
		mustOK(t, "write a runtime ack for an HTTP runtime", put(ctx, c, key("runtime/acks/op-bot/http-1"), lease))
		mustOK(t, "write a heartbeat for an HTTP runtime", put(ctx, c, key("runtime/instances/http-1"), lease))
		for _, p := range []string{"drills/schedules/chat-70b", "drills/runs/chat-70b/1767225600", "drills/announcements/chat-70b/1", "policies/chat-70b", "warmkeep/chat-70b", "audit/quarantine/x"} {
			mustOK(t, "write "+p, put(ctx, c, key(p), 0))
		}
		_, err = c.Delete(ctx, key("audit/outbox/op-bot/0"))
		mustOK(t, "delete a shipped audit event", err)
		mustDeny(t, "write fleet/nodes/", put(ctx, c, key("fleet/nodes/x"), 0))
		mustDeny(t, "write routers/", put(ctx, c, key("routers/x"), 0))
		mustDeny(t, "read outside its prefix", get(ctx, c, "/other/"))
	})

	t.Run("backflipctl", func(t *testing.T) {
		c := login(t, endpoint, "backflipctl", rolePasswords["ETCD_CTL_PASSWORD"])
		mustOK(t, "flip", flip(t, c, "op-ctl"))
		mustOK(t, "read fleet/nodes/", get(ctx, c, key("fleet/nodes/")))
		mustOK(t, "read routers/", get(ctx, c, key("routers/")))
		mustOK(t, "read runtime/instances/", get(ctx, c, key("runtime/instances/")))
		mustOK(t, "write a runtime ack", put(ctx, c, key("runtime/acks/op-ctl/http-1"), 0))
		mustOK(t, "schedule a drill", put(ctx, c, key("drills/schedules/chat-70b"), 0))
		mustDeny(t, "campaign on election/leader", campaign(c))
		mustDeny(t, "write runtime/instances/", put(ctx, c, key("runtime/instances/x"), 0))
		mustDeny(t, "write fleet/nodes/", put(ctx, c, key("fleet/nodes/x"), 0))
	})
}

// startEtcd starts a real single etcd member for the role test and returns
// its client URL. It is etcd's embed package directly rather than
// internal/etcdtest for one setting: bcrypt's cost. With etcd's default (10)
// each of the ~120 etcdctl logins of two roles.sh runs costs the
// race-instrumented server about half a second; with the minimum (4) the
// hashing is as real and takes a millisecond.
func startEtcd(t *testing.T) string {
	t.Helper()
	u, err := url.Parse("http://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*u}, []url.URL{*u}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*u}, []url.URL{*u}
	cfg.InitialCluster = cfg.Name + "=" + u.String()
	cfg.BcryptCost = 4 // bcrypt.MinCost
	cfg.EnableGRPCGateway = false
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd failed while starting: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready within 30 s")
	}
	return "http://" + e.Clients[0].Addr().String()
}

// login returns a client of endpoint as user ("" for none), closed when the
// test ends.
func login(t *testing.T, endpoint, user, password string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		Username:    user,
		Password:    password,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("log in to etcd as %q: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func grant(ctx context.Context, t *testing.T, c *clientv3.Client) clientv3.LeaseID {
	t.Helper()
	l, err := c.Grant(ctx, 30)
	if err != nil {
		t.Fatalf("grant a lease: %v", err)
	}
	return l.ID
}

func put(ctx context.Context, c *clientv3.Client, key string, lease clientv3.LeaseID) error {
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	_, err := c.Put(ctx, key, "{}", opts...)
	return err
}

func get(ctx context.Context, c *clientv3.Client, prefix string) error {
	_, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	return err
}

// watchOnce watches prefix as c and sees a put to key made by writer.
func watchOnce(ctx context.Context, c, writer *clientv3.Client, prefix, key string) error {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 10*time.Second)
	defer cancel()
	wch := c.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp, ok := <-wch; !ok || resp.Err() != nil {
		if ok {
			return resp.Err()
		}
		return errors.New("watch closed before it was created")
	}
	if _, err := writer.Put(ctx, key, `{"route":"chat-70b","active":"v42","previous":"v41"}`); err != nil {
		return err
	}
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			if string(ev.Kv.Key) == key {
				return nil
			}
		}
	}
	return fmt.Errorf("watch ended without the put: %w", wctx.Err())
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func mustDeny(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("%s: err %v, want %v", what, err, rpctypes.ErrPermissionDenied)
	}
}

// with copies m and sets the key-value pairs kv.
func with(m map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}
