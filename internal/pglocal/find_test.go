package pglocal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestFindBinDir(t *testing.T) {
	root := t.TempDir()
	mkServer := func(dir string, names ...string) string {
		t.Helper()
		dir = filepath.Join(root, dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	envBin := mkServer("env", "initdb", "postgres")
	clientOnly := mkServer("client", "initdb") // no postgres next to it
	v96 := mkServer("lib/9.6/bin", "initdb", "postgres")
	v15 := mkServer("lib/15/bin", "initdb", "postgres")
	mkServer("lib/16/bin", "initdb") // newest, but incomplete
	linked := mkServer("linked")
	if err := os.Symlink(filepath.Join(v96, "initdb"), filepath.Join(linked, "initdb")); err != nil {
		t.Fatal(err)
	}
	glob := filepath.Join(root, "lib/*/bin")
	noPath := func(string) (string, error) { return "", errors.New("not found") }
	onPath := func(dir string) func(string) (string, error) {
		return func(name string) (string, error) { return filepath.Join(dir, name), nil }
	}
	env := func(bin string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if k == EnvBin && bin != "" {
				return bin, true
			}
			return "", false
		}
	}

	tests := []struct {
		name     string
		getenv   func(string) (string, bool)
		lookPath func(string) (string, error)
		glob     string
		want     string
		wantErr  string
	}{
		{name: "EnvWins", getenv: env(envBin), lookPath: onPath(v96), glob: glob, want: envBin},
		{name: "EnvIncompleteIsAnError", getenv: env(clientOnly), lookPath: onPath(v96), glob: glob, wantErr: "BACKFLIP_PG_BIN=" + clientOnly},
		{name: "PathSymlinkResolved", getenv: env(""), lookPath: onPath(linked), glob: glob, want: v96},
		{name: "PathWithoutServerFallsThrough", getenv: env(""), lookPath: onPath(clientOnly), glob: glob, want: v15},
		{name: "NewestCompleteVersion", getenv: env(""), lookPath: noPath, glob: glob, want: v15},
		{name: "NothingSaysWhatToInstall", getenv: env(""), lookPath: noPath, glob: filepath.Join(root, "none/*/bin"), wantErr: "install the 'postgresql' package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findBinDir(tt.getenv, tt.lookPath, tt.glob)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrNoBinaries) {
					t.Fatalf("findBinDir = %q, %v; want ErrNoBinaries containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("findBinDir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct {
		name, raw string
	}{
		{name: "Plain", raw: "postgres://u:p@db.example:5433/app?sslmode=disable"},
		{name: "NoPath", raw: "postgres://u@db.example"},
		{name: "NoPathQuery", raw: "postgresql://u@db.example?sslmode=disable&application_name=x"},
		{name: "DbnameParamOverridesPath", raw: "postgres://u@db.example/app?dbname=other&sslmode=disable"},
		{name: "PasswordWithQuestionMarkAndAt", raw: "postgres://u:pa%40ss?w@db.example/app"},
		{name: "EmptyPassword", raw: "postgres://u:@db.example/app?sslmode=disable"},
		{name: "MultiHost", raw: "postgres://u@h1:5432,h2:5433/app?sslmode=disable&target_session_attrs=any"},
		{name: "SocketWithOddCharacters", raw: socketURL("/tmp/a b+c&d=e?f", 5432)},
	}
	for i, db := range []string{"bf_1_test_x", "odd name+/?&é"} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/db%d", tt.name, i), func(t *testing.T) {
				orig, err := pgx.ParseConfig(tt.raw)
				if err != nil {
					t.Fatalf("parse original %q: %v", tt.raw, err)
				}
				out := WithDatabase(tt.raw, db)
				got, err := pgx.ParseConfig(out)
				if err != nil {
					t.Fatalf("parse %q: %v", out, err)
				}
				if got.Database != db {
					t.Errorf("%q: database %q, want %q", out, got.Database, db)
				}
				orig.Database = db
				if got.Host != orig.Host || got.Port != orig.Port || got.User != orig.User || got.Password != orig.Password ||
					len(got.Fallbacks) != len(orig.Fallbacks) || (got.TLSConfig == nil) != (orig.TLSConfig == nil) {
					t.Errorf("%q: %s:%s@%s:%d (%d fallbacks), want %s:%s@%s:%d (%d fallbacks)", out,
						got.User, got.Password, got.Host, got.Port, len(got.Fallbacks),
						orig.User, orig.Password, orig.Host, orig.Port, len(orig.Fallbacks))
				}
			})
		}
	}
	if got, err := pgx.ParseConfig(socketURL("/tmp/a b+c&d=e?f", 5432)); err != nil || got.Host != "/tmp/a b+c&d=e?f" || got.Database != "postgres" {
		t.Errorf("socket URL = %+v, %v", got, err)
	}
}
