package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// TestClearErrors checks that each common mistake gives one clear line on
// stderr and a non-zero exit, never a panic or a Go stack trace.
func TestClearErrors(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.db")
	garbage := []byte(strings.Repeat("this is not a database\x00\xff", 400))
	if err := os.WriteFile(corrupt, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		bin  string
		args []string
		want string
	}{
		{"wrong --server", bin.collector, []string{"nodes", "--server", "not-an-address"}, "want HOST:PORT"},
		{"collector down", bin.collector, []string{"nodes", "--server", "127.0.0.1:1"}, "cannot reach the collector at 127.0.0.1:1"},
		{"corrupt SQLite file", bin.collector, []string{"serve", "--listen", "127.0.0.1:0", "--store", "sqlite:" + corrupt}, "not a database"},
		{"unknown store", bin.collector, []string{"serve", "--store", "mysql:x"}, "unknown store"},
		{"unknown flag", bin.collector, []string{"nodes", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{"unknown flag (agent)", bin.agent, []string{"report", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{"bad output format", bin.collector, []string{"nodes", "-o", "yaml"}, "unknown output format"},
		{"missing host root", bin.agent, []string{"report", "--root", filepath.Join(dir, "nope")}, "no such file or directory"},
		{"agent without collector", bin.agent, []string{"run", "--node-name", "x"}, "--collector is required"},
		{"unknown source", bin.agent, []string{"report", "--only", "nope"}, `unknown source "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			stdout, stderr, code := cli(t, tc.bin, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0; stdout %q", stdout)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Errorf("stderr has %d lines, want 1:\n%s", len(lines), stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", stderr, tc.want)
			}
			for _, bad := range []string{"panic", "goroutine ", ".go:"} {
				if strings.Contains(stderr, bad) {
					t.Errorf("stderr shows %q:\n%s", bad, stderr)
				}
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("took %s to fail", d)
			}
		})
	}
	// The corrupt file is left as it was: nothing was "repaired" over it.
	after, err := os.ReadFile(corrupt)
	if err != nil || string(after) != string(garbage) {
		t.Errorf("corrupt store file was modified")
	}
}
