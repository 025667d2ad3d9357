package pglocal

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// debianBinGlob is where Debian and Ubuntu install each major version's server binaries; they
// are not on PATH there.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// EnvBin names the variable that points at the folder holding initdb and postgres.
const EnvBin = "BACKFLIP_PG_BIN"

// findBinDir returns the folder holding initdb and postgres: $BACKFLIP_PG_BIN if set (and
// then only it), else the folder of initdb on PATH (symlinks resolved, so /usr/local/bin
// links into /usr/lib/postgresql/15/bin work), else the newest /usr/lib/postgresql/*/bin.
// scripts/ensure-postgres.sh follows the same order.
func findBinDir(getenv func(string) (string, bool), lookPath func(string) (string, error), glob string) (string, error) {
	if dir, _ := getenv(EnvBin); dir != "" {
		if !hasServer(dir) {
			return "", fmt.Errorf("pglocal: %s=%s does not hold both initdb and postgres: %w", EnvBin, dir, ErrNoBinaries)
		}
		return dir, nil
	}
	if p, err := lookPath("initdb"); err == nil {
		var candidates []string
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(resolved))
		}
		candidates = append(candidates, filepath.Dir(p))
		for _, dir := range candidates {
			if hasServer(dir) {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob(glob) // the pattern is constant, so the only error is ErrBadPattern
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a))) // newest first
	})
	for _, dir := range dirs {
		if hasServer(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("pglocal: no initdb and postgres in $%s, PATH or %s: %w", EnvBin, glob, ErrNoBinaries)
}

func hasServer(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// compareVersions orders Postgres major versions numerically: "9.6" < "10" < "15".
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return strings.Compare(a, b)
}
