// Package testutil holds test helpers both binaries' tests use: privilege
// gates, the shared fixture tree, and building the real binaries.
package testutil

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// RequirePrivileged skips t unless it runs as root. Under
// NODEWARD_REQUIRE_PRIVILEGED=1 (CI) a missing privilege fails the test
// instead: CI must run every privileged test.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}

// Unavailable skips t with reason, or fails it under
// NODEWARD_REQUIRE_PRIVILEGED=1.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("NODEWARD_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("NODEWARD_REQUIRE_PRIVILEGED=1 but %s", reason)
	}
	t.Skip(reason)
}

// RepoRoot is the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FixturesDir is shared/fixtures beside the repository (or
// $NODEWARD_FIXTURES). Tests that need it skip without it, or fail under
// NODEWARD_REQUIRE_PRIVILEGED=1.
func FixturesDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("NODEWARD_FIXTURES")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "..", "shared", "fixtures")
	}
	if _, err := os.Stat(filepath.Join(dir, "hosts")); err != nil {
		Unavailable(t, "fixture tree not found at "+dir+" (set NODEWARD_FIXTURES)")
	}
	return dir
}

// FixtureHost returns the directory of one fixture host.
func FixtureHost(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(FixturesDir(t), "hosts", name)
}

// CopyFixtureRoot copies a fixture host's root/ into a temporary directory
// and turns back into symlinks the files that stand for one: the fixture
// tree stores a symlink as a small regular file holding its relative target
// (e.g. etc/os-release containing "../usr/lib/os-release"). A file is taken
// for a link only when its whole content is a relative path, with no
// newline, naming a file that exists in the tree.
func CopyFixtureRoot(t testing.TB, name string) string {
	t.Helper()
	src := filepath.Join(FixtureHost(t, name), "root")
	dst := filepath.Join(t.TempDir(), "root")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if target, ok := flattenedLink(src, p, b); ok {
			return os.Symlink(target, out)
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy fixture %s: %v", name, err)
	}
	return dst
}

func flattenedLink(root, p string, b []byte) (string, bool) {
	s := string(b)
	if len(s) == 0 || len(s) > 256 || strings.ContainsAny(s, "\n\x00 =") || filepath.IsAbs(s) || !strings.Contains(s, "/") {
		return "", false
	}
	target := filepath.Clean(filepath.Join(filepath.Dir(p), s))
	if !strings.HasPrefix(target, root+string(filepath.Separator)) {
		return "", false
	}
	if fi, err := os.Stat(target); err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	return s, true
}

var (
	buildMu  sync.Mutex
	builtBin = map[string]string{}
)

// BuildBinary builds one of the project's commands ("./agent",
// "./collector") once per test process and returns the binary's path.
func BuildBinary(t testing.TB, pkg, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builtBin[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "nodeward-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	builtBin[pkg] = out
	return out
}
