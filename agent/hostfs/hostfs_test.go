package hostfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tree builds a host root with links that try to leave it.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	outside = filepath.Join(base, "outside")
	for _, d := range []string{root + "/etc", root + "/usr/lib", outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(root+"/usr/lib/os-release", "ID=inside\n")
	write(outside+"/secret", "ID=outside\n")
	write(root+"/secret", "ID=root-secret\n")
	link := func(target, p string) {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	link("../usr/lib/os-release", root+"/etc/os-release")
	link("/usr/lib/os-release", root+"/etc/abs-link")
	link("../../../outside/secret", root+"/etc/climb")
	link(outside+"/secret", root+"/etc/abs-outside")
	link("loop-b", root+"/etc/loop-a")
	link("loop-a", root+"/etc/loop-b")
	if err := syscall.Mkfifo(root+"/etc/fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	return root, outside
}

func TestReadFileResolvesInsideRoot(t *testing.T) {
	dir, _ := tree(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tests := []struct {
		path string
		want string
		err  error
	}{
		{"/etc/os-release", "ID=inside\n", nil},
		{"etc/os-release", "ID=inside\n", nil},
		// An absolute link means the host's /usr/lib, which is inside the root.
		{"/etc/abs-link", "ID=inside\n", nil},
		// ".." stops at the root: ../../../outside/secret is root/outside/secret.
		{"/etc/climb", "", fs.ErrNotExist},
		// An absolute link to the agent's own filesystem resolves under the root.
		{"/etc/abs-outside", "", fs.ErrNotExist},
		{"/../../secret", "ID=root-secret\n", nil},
		{"/etc/loop-a", "", syscall.ELOOP},
		{"/etc/fifo", "", ErrNotRegular},
		{"/etc", "", ErrNotRegular},
		{"/missing", "", fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got, err := r.ReadFile(tc.path, 1024)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ReadFile(%q) error = %v, want %v", tc.path, err, tc.err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("ReadFile(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
			}
		})
	}
}

func TestReadFileBounded(t *testing.T) {
	dir := t.TempDir()
	// A sparse 1 GiB file costs no disk and must not be read whole.
	f, err := os.Create(filepath.Join(dir, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.ReadFile("/huge", 4096)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadFile(huge) error = %v, want ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "/huge") {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestRealPathStaysInRoot(t *testing.T) {
	dir, _ := tree(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := r.RealPath("/etc/abs-link")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(filepath.Join(dir, "usr/lib/os-release"))
	if p != want {
		t.Fatalf("RealPath = %q, want %q", p, want)
	}
	entries, err := r.ReadDir("/etc")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 7 {
		t.Fatalf("ReadDir(/etc) = %d entries, want 7", len(entries))
	}
}

func TestOpenMissingRoot(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open(missing) error = %v", err)
	}
}

// Exists and Readlink resolve inside the root like every other read: the
// link itself is read, its parent never leaves the root.
func TestExistsAndReadlink(t *testing.T) {
	dir, _ := tree(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	exists := []struct {
		path string
		want bool
		err  error
	}{
		{"/etc/os-release", true, nil},
		{"/etc/climb", false, nil},
		{"/missing", false, nil},
		{"/etc/loop-a", false, syscall.ELOOP},
	}
	for _, tc := range exists {
		got, err := r.Exists(tc.path)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Exists(%q) = %v, %v; want %v, %v", tc.path, got, err, tc.want, tc.err)
		}
	}
	links := []struct {
		path string
		want string
		err  error
	}{
		{"/etc/os-release", "../usr/lib/os-release", nil},
		{"/etc/abs-outside", filepath.Join(filepath.Dir(dir), "outside", "secret"), nil},
		// The parent resolves inside the root: /etc/../etc/climb is /etc/climb.
		{"/../etc/climb", "../../../outside/secret", nil},
		{"/secret", "", syscall.EINVAL},
		{"/etc/missing", "", fs.ErrNotExist},
	}
	for _, tc := range links {
		got, err := r.Readlink(tc.path)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Readlink(%q) = %q, %v; want %q, %v", tc.path, got, err, tc.want, tc.err)
		}
	}
}
