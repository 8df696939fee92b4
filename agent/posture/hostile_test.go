package posture

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
)

// hostilePaths are the files this package's checks read under the root.
var hostilePaths = []string{
	"etc/selinux/config", "sys/fs/selinux/enforce",
	"sys/module/apparmor/parameters/enabled", "sys/kernel/security/apparmor/profiles",
	"etc/eks/release", "var/run/reboot-required", "var/run/reboot-required.pkgs",
	"etc/audit/audit.rules", "etc/systemd/journald.conf", "etc/systemd/journald.conf.d/a.conf",
	"etc/ssh/sshd_config", "usr/sbin/sshd", "usr/bin/amazon-ssm-agent",
	"run/dbus/system_bus_socket", "lib/systemd/system/ssh.service", "etc/systemd/system/ssh.service",
	"sys/dev/block/259:1", "dev/nvme0n1",
}

// hostileProc are the files read under the host's /proc.
var hostileProc = []string{"1/mountinfo", "1/comm"}

// TestChecksOnHostileRoots runs every check of this package over roots
// where each file they read is, in turn, a 1 GiB file, binary garbage, a
// FIFO, or a symlink leading out of the root. No check may panic or hang,
// and none may pass on such input unless the file plays no part.
func TestChecksOnHostileRoots(t *testing.T) {
	kinds := map[string]func(t *testing.T, p string){
		"1GiB": func(t *testing.T, p string) {
			f, err := os.Create(p)
			must(t, err)
			must(t, f.Truncate(1<<30))
			_ = f.Close()
		},
		"garbage": func(t *testing.T, p string) {
			b := make([]byte, 8192)
			for i := range b {
				b[i] = byte(i*7 + i>>3)
			}
			must(t, os.WriteFile(p, b, 0o644))
		},
		"fifo":    func(t *testing.T, p string) { must(t, unix.Mkfifo(p, 0o644)) },
		"escape":  func(t *testing.T, p string) { must(t, os.Symlink("/../../../../../../../../etc/shadow", p)) },
		"dirloop": func(t *testing.T, p string) { must(t, os.Symlink(filepath.Base(p), p)) },
	}
	for kind, build := range kinds {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			root, proc := filepath.Join(dir, "root"), filepath.Join(dir, "proc")
			for _, p := range hostilePaths {
				full := filepath.Join(root, p)
				must(t, os.MkdirAll(filepath.Dir(full), 0o755))
				build(t, full)
			}
			for _, p := range hostileProc {
				full := filepath.Join(proc, p)
				must(t, os.MkdirAll(filepath.Dir(full), 0o755))
				build(t, full)
			}
			r, err := hostfs.Open(root)
			must(t, err)
			defer func() { _ = r.Close() }()
			env := &source.Env{Root: r, Proc: proc}
			facts := &nodewardv1.Snapshot{Node: &nodewardv1.Node{KernelRelease: "6.1.0"}}
			done := make(chan *nodewardv1.Snapshot, 1)
			go func() {
				s, _ := collect(context.Background(), env, facts)
				done <- s
			}()
			var snap *nodewardv1.Snapshot
			select {
			case snap = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("checks hung on hostile input")
			}
			for _, f := range snap.GetFindings() {
				if strings.HasSuffix(f.GetCheckId(), ".internal") {
					t.Errorf("check panicked: %s", evidenceText(f))
				}
				if len(f.GetEvidence()) == 0 {
					t.Errorf("%s: no evidence", f.GetCheckId())
				}
				if !goldenCheck(f.GetCheckId()) {
					continue
				}
				t.Logf("%s: %s", f.GetCheckId(), strings.TrimPrefix(f.GetStatus().String(), "FINDING_STATUS_"))
				if f.GetStatus() == statPass {
					switch f.GetCheckId() {
					case "ssh.service-enabled", "audit.journald-persistent":
						// Unreadable unit files or a missing journal file
						// can still leave a safe answer; their evidence says so.
					default:
						t.Errorf("%s passed on %s input:\n%s", f.GetCheckId(), kind, evidenceText(f))
					}
				}
			}
		})
	}
}
