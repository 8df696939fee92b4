package systemd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
)

// Offline reads unit files as systemctl is-enabled does: a link to
// /dev/null masks, a link in a .wants or .requires directory enables, a
// unit only in the vendor directories is disabled.
func TestOffline(t *testing.T) {
	dir := t.TempDir()
	write := func(p, c string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(p, target string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	write("lib/systemd/system/ssh.service", "[Service]\n")
	write("lib/systemd/system/ssh.socket", "[Socket]\n")
	write("usr/lib/systemd/system/auditd.service", "[Service]\n")
	write("usr/lib/systemd/system/chronyd.service", "[Service]\n")
	link("etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service")
	link("etc/systemd/system/sockets.target.requires/chronyd.service", "/usr/lib/systemd/system/chronyd.service")
	link("etc/systemd/system/auditd.service", "/dev/null")
	root, err := hostfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	for name, want := range map[string]struct {
		load, file              string
		exists, enabled, masked bool
	}{
		"ssh.service":     {"loaded", "enabled", true, true, false},
		"ssh.socket":      {"loaded", "disabled", true, false, false},
		"auditd.service":  {"masked", "masked", true, false, true},
		"chronyd.service": {"loaded", "enabled", true, true, false},
		"nope.service":    {"not-found", "", false, false, false},
	} {
		u, err := Offline(root, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if u.LoadState != want.load || u.UnitFileState != want.file || u.Exists() != want.exists || u.Enabled() != want.enabled || u.Masked() != want.masked || u.Active() {
			t.Errorf("%s: %+v, want %+v", name, u, want)
		}
	}
	// No bus under this root: State falls back and says why.
	units, busErr, err := State(context.Background(), root, []string{"ssh.service"})
	if err != nil || !errors.Is(busErr, ErrNoBus) || len(units) != 1 || units[0].Via != "unit files" {
		t.Errorf("State: %+v, bus %v, err %v", units, busErr, err)
	}
	// A regular file where the bus socket should be is refused.
	write("run/dbus/system_bus_socket", "")
	if _, err := Query(context.Background(), root, []string{"ssh.service"}); !errors.Is(err, ErrNoBus) {
		t.Errorf("Query on a regular file: %v", err)
	}
}
