package sshdconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
)

func writeFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func evalRoot(t *testing.T, root string) (*Config, error) {
	t.Helper()
	r, err := hostfs.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	prof, err := ProfileFor("9.2p1", "debian", "", "test")
	if err != nil {
		t.Fatal(err)
	}
	return Evaluate(r, prof, &ConnInfo{})
}

// TestHostileInput: every hostile tree gives an error that says why, and
// nothing outside the root is ever read.
func TestHostileInput(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, outside, "secret.conf", "PermitRootLogin yes\n")
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root string)
		want  string // in the error
	}{
		{"missing sshd_config", func(t *testing.T, root string) {}, "file does not exist"},
		{"1 GiB sparse sshd_config", func(t *testing.T, root string) {
			writeFile(t, root, "etc/ssh/sshd_config", "")
			if err := os.Truncate(filepath.Join(root, "etc/ssh/sshd_config"), 1<<30); err != nil {
				t.Fatal(err)
			}
		}, "exceeds size limit"},
		{"1 GiB sparse included file", func(t *testing.T, root string) {
			writeFile(t, root, "etc/ssh/sshd_config", "Include big.conf\n")
			writeFile(t, root, "etc/ssh/big.conf", "")
			if err := os.Truncate(filepath.Join(root, "etc/ssh/big.conf"), 1<<30); err != nil {
				t.Fatal(err)
			}
		}, "exceeds size limit"},
		{"binary garbage", func(t *testing.T, root string) {
			b := make([]byte, 4096)
			for i := range b {
				b[i] = byte(i*7919 + i/3)
			}
			writeFile(t, root, "etc/ssh/sshd_config", string(b))
		}, "Bad configuration option"},
		{"include loop", func(t *testing.T, root string) {
			writeFile(t, root, "etc/ssh/sshd_config", "Include a.conf\n")
			writeFile(t, root, "etc/ssh/a.conf", "Include b.conf\n")
			writeFile(t, root, "etc/ssh/b.conf", "Include /etc/ssh/a.conf\n")
		}, "Too many recursive configuration includes"},
		{"include fan-out", func(t *testing.T, root string) {
			writeFile(t, root, "etc/ssh/sshd_config", strings.Repeat("Include a.conf\n", 200))
			writeFile(t, root, "etc/ssh/a.conf", strings.Repeat("Include b.conf\n", 200))
			writeFile(t, root, "etc/ssh/b.conf", strings.Repeat("MaxAuthTries 3\n", 200))
		}, "configuration lines through Includes"},
		{"listen address explosion", func(t *testing.T, root string) {
			var b strings.Builder
			for i := 1; i <= 256; i++ {
				fmt.Fprintf(&b, "Port %d\n", 1000+i)
			}
			for i := 0; i < 100; i++ {
				fmt.Fprintf(&b, "ListenAddress 10.0.0.%d\n", i)
			}
			writeFile(t, root, "etc/ssh/sshd_config", b.String())
		}, "more than 4096 listen addresses"},
		{"absolute symlink pointing outside the root", func(t *testing.T, root string) {
			writeFile(t, root, "etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\n")
			if err := os.MkdirAll(filepath.Join(root, "etc/ssh/sshd_config.d"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(outside, "secret.conf"), filepath.Join(root, "etc/ssh/sshd_config.d/evil.conf")); err != nil {
				t.Fatal(err)
			}
		}, "file does not exist"},
		{"relative symlink climbing out of the root", func(t *testing.T, root string) {
			rel, err := filepath.Rel(filepath.Join(root, "etc/ssh"), filepath.Join(outside, "secret.conf"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(root, "etc/ssh"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(rel, filepath.Join(root, "etc/ssh/sshd_config")); err != nil {
				t.Fatal(err)
			}
		}, "file does not exist"},
		{"FIFO as an include", func(t *testing.T, root string) {
			writeFile(t, root, "etc/ssh/sshd_config", "Include fifo.conf\n")
			if err := syscall.Mkfifo(filepath.Join(root, "etc/ssh/fifo.conf"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"unterminated quote", func(t *testing.T, root string) {
			writeFile(t, root, "etc/ssh/sshd_config", "AllowUsers \"alice\n")
		}, "invalid quotes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tc.setup(t, root)
			cfg, err := evalRoot(t, root)
			if err == nil {
				t.Fatalf("no error; got config:\n%s", strings.Join(cfg.Lines(), "\n"))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestMissingMainIsNotExist lets callers tell "no sshd config" (not
// applicable) from a broken one.
func TestMissingMainIsNotExist(t *testing.T) {
	_, err := evalRoot(t, t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}
