package etcdclient

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

func TestNewReadsAndWrites(t *testing.T) {
	srv := etcdtest.Start(t)
	cli, err := New(config.Etcd{Endpoints: []string{srv.Endpoint()}, Prefix: "/backflip"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", resp, err)
	}
}

// TestNewWithAuth turns etcd auth on and checks the user and password are
// what the client presents: the right ones work, a wrong password fails
// without showing it.
func TestNewWithAuth(t *testing.T) {
	srv := etcdtest.Start(t)
	admin := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "ctl", "ctlpw"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "reader", "/backflip/", "/backflip0", clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx, "ctl", "reader"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up etcd auth: %v", err)
		}
	}

	good := config.Etcd{Endpoints: []string{srv.Endpoint()}, Username: "ctl", Password: "ctlpw"}
	cli, err := New(good, nil)
	if err != nil {
		t.Fatalf("right credentials: %v", err)
	}
	defer cli.Close()
	if _, err := cli.Get(ctx, "/backflip/routes/"); err != nil {
		t.Fatalf("read as ctl: %v", err)
	}
	if _, err := cli.Put(ctx, "/backflip/routes/x", "y"); err == nil {
		t.Fatal("the read-only user could write: auth was not applied")
	}

	bad := good
	bad.Password = "wrong-hunter2"
	if cli, err := New(bad, nil); err == nil {
		cli.Close()
		t.Fatal("a wrong password was accepted")
	} else if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error shows the password: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  config.Etcd
		want string
	}{
		{"NoEndpoints", config.Etcd{}, "BACKFLIP_ETCD_ENDPOINTS"},
		{"MissingCA", config.Etcd{Endpoints: []string{"127.0.0.1:1"}, CAFile: missing}, "etcd TLS"},
		{"GarbageCert", config.Etcd{Endpoints: []string{"127.0.0.1:1"}, CertFile: garbage, KeyFile: garbage}, "etcd TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := New(tc.cfg, nil)
			if err == nil {
				cli.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestNewQuietLogger: a logger that already logs only errors (backflipctl's
// default) is used as it is, without zap's complaint about raising a level
// downwards.
func TestNewQuietLogger(t *testing.T) {
	srv := etcdtest.Start(t)
	var buf bytes.Buffer
	log, err := config.NewLoggerTo(&buf, "error", "console")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := New(config.Etcd{Endpoints: []string{srv.Endpoint()}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Get(context.Background(), "/k"); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("logged: %s", buf.String())
	}
}
