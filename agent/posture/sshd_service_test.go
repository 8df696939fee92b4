package posture

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/posture/systemd"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// bootSystemd boots a throw-away systemd with systemd-nspawn on an overlay
// of this machine's root (all writes go to tmpfs) and returns the
// container's PID 1 as seen from here. Its root filesystem is then
// /proc/PID/root, with the system bus at run/dbus/system_bus_socket.
func bootSystemd(t *testing.T) int {
	t.Helper()
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"systemd-nspawn", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed (apt-get install systemd-container util-linux)")
		}
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		testutil.Unavailable(t, "systemd not installed on this machine")
	}
	state := t.TempDir()
	mnt := filepath.Join(state, "root")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	name := "nwp" + strconv.Itoa(os.Getpid())
	script := "mount --make-rprivate / && mount --bind / " + mnt + " && exec systemd-nspawn -D " + mnt +
		" --volatile=overlay --boot --private-network --register=no --keep-unit -M " + name +
		" --console=pipe -- systemd.mask=postgresql.service systemd.mask=auditd.service systemd.mask=rsyslog.service"
	cmd := exec.Command("unshare", "-m", "sh", "-c", script)
	logf, err := os.Create(filepath.Join(state, "nspawn.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // nspawn halts the container
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logf.Close()
	})
	var leader int
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if leader == 0 {
			out, _ := exec.Command("pgrep", "-P", strconv.Itoa(cmd.Process.Pid), "-x", "systemd").Output()
			if f := strings.Fields(string(out)); len(f) > 0 {
				leader, _ = strconv.Atoi(f[0])
			}
		}
		if leader != 0 {
			out, _ := exec.Command("nsenter", "-t", strconv.Itoa(leader), "-a", "systemctl", "is-system-running").Output()
			if s := strings.TrimSpace(string(out)); s == "running" || s == "degraded" {
				return leader
			}
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("systemd-nspawn exited early:\n%s", log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	log, _ := os.ReadFile(logf.Name())
	t.Fatalf("container systemd not running after 30 s (leader %d):\n%s", leader, log)
	return 0
}

// systemctlShow is the oracle: the container's own systemctl.
func systemctlShow(t *testing.T, leader int, unit string) systemd.Unit {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(leader), "-a", "systemctl", "show",
		"-p", "LoadState,ActiveState,SubState,UnitFileState", unit).Output()
	if err != nil {
		t.Fatalf("systemctl show %s: %v", unit, err)
	}
	u := systemd.Unit{Name: unit, Via: "dbus"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "LoadState":
			u.LoadState = v
		case "ActiveState":
			u.ActiveState = v
		case "SubState":
			u.SubState = v
		case "UnitFileState":
			u.UnitFileState = v
		}
	}
	return u
}

func systemctl(t *testing.T, leader int, args ...string) {
	t.Helper()
	a := append([]string{"-t", strconv.Itoa(leader), "-a", "systemctl"}, args...)
	if out, err := exec.Command("nsenter", a...).CombinedOutput(); err != nil {
		t.Fatalf("systemctl %v: %v\n%s", args, err, out)
	}
}

// TestSSHDServiceRealSystemd drives the unit through its states with the
// container's own systemctl and checks that the D-Bus answer, the on-disk
// answer and the finding follow.
func TestSSHDServiceRealSystemd(t *testing.T) {
	if _, err := os.Stat("/lib/systemd/system/ssh.service"); err != nil {
		testutil.Unavailable(t, "openssh-server (ssh.service) not installed on this machine")
	}
	leader := bootSystemd(t)
	croot, err := hostfs.Open("/proc/" + strconv.Itoa(leader) + "/root")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = croot.Close() }()
	env := &source.Env{Root: croot, Proc: t.TempDir()} // D-Bus must answer on its own
	ctx := context.Background()

	steps := []struct {
		name       string
		do         [][]string
		wantStatus nodewardv1.FindingStatus
	}{
		{"as booted", nil, 0},
		{"stopped and disabled", [][]string{{"disable", "--now", "ssh.service", "ssh.socket"}}, statPass},
		{"socket-activated", [][]string{{"enable", "--now", "ssh.socket"}}, statFail},
		{"masked", [][]string{{"disable", "--now", "ssh.socket"}, {"mask", "ssh.service"}}, statPass},
		{"running again", [][]string{{"unmask", "ssh.service"}, {"start", "ssh.service"}}, statFail},
	}
	for _, st := range steps {
		for _, args := range st.do {
			systemctl(t, leader, args...)
		}
		got, err := systemd.Query(ctx, croot, sshUnits)
		if err != nil {
			t.Fatalf("%s: Query: %v", st.name, err)
		}
		for _, u := range got {
			t.Logf("%s: %s: %s", st.name, u.Name, u)
			want := systemctlShow(t, leader, u.Name)
			if u != want {
				t.Errorf("%s: D-Bus says %+v, systemctl says %+v", st.name, u, want)
			}
			// The unit files on disk agree with systemd about enablement.
			if off, err := systemd.Offline(croot, u.Name); err != nil {
				t.Errorf("%s: Offline(%s): %v", st.name, u.Name, err)
			} else if want.LoadState != "not-found" && off.Enabled() != want.Enabled() || off.Masked() != want.Masked() {
				t.Errorf("%s: unit files say %+v, systemd says %+v", st.name, off, want)
			}
		}
		fs := runSSHDService(ctx, env, &nodewardv1.Snapshot{})
		if len(fs) != 1 {
			t.Fatalf("%s: %d findings", st.name, len(fs))
		}
		active := false
		for _, n := range sshUnits {
			u := systemctlShow(t, leader, n)
			active = active || u.Active() || u.Enabled()
		}
		want := st.wantStatus
		if want == 0 {
			want = map[bool]nodewardv1.FindingStatus{true: statFail, false: statPass}[active]
		}
		if fs[0].GetStatus() != want {
			t.Errorf("%s: status %v, want %v; evidence %v", st.name, fs[0].GetStatus(), want, fs[0].GetEvidence())
		}
		for _, e := range fs[0].GetEvidence() {
			if strings.Contains(e.GetReason(), "not reachable over D-Bus") {
				t.Errorf("%s: D-Bus was not used: %v", st.name, e)
			}
		}
	}
}

// TestReportOverRealSystemd runs the agent binary with the container's
// root as the host root: every service check must get its unit state from
// the container's systemd over D-Bus, the container's own systemctl being
// the oracle.
func TestReportOverRealSystemd(t *testing.T) {
	if _, err := os.Stat("/lib/systemd/system/ssh.service"); err != nil {
		testutil.Unavailable(t, "openssh-server (ssh.service) not installed on this machine")
	}
	bin := testutil.BuildBinary(t, "./agent", "nodeward-agent")
	leader := bootSystemd(t)
	root := "/proc/" + strconv.Itoa(leader) + "/root"
	out, err := exec.Command(bin, "report", "--root", root, "--proc", t.TempDir(), "--only", "os,posture", "-o", "json").Output()
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var snap nodewardv1.Snapshot
	must(t, protojson.Unmarshal(out, &snap))
	got := byID(snap.GetFindings())
	for id, unit := range map[string]string{"ssh.service-enabled": "ssh.service", "audit.auditd": "auditd.service", "ssm.agent": "amazon-ssm-agent.service"} {
		f := got[id]
		if f == nil {
			t.Fatalf("no %s finding", id)
		}
		ev := evidenceText(f)
		t.Logf("%s %v:\n%s", id, f.GetStatus(), ev)
		if strings.Contains(ev, "not reachable over D-Bus") {
			t.Errorf("%s: D-Bus not used:\n%s", id, ev)
		}
		want := systemctlShow(t, leader, unit)
		if want.LoadState != "not-found" && !strings.Contains(ev, "systemd dbus: "+want.Name+" | "+want.String()) {
			t.Errorf("%s: evidence lacks systemctl's %s %s:\n%s", id, want.Name, want, ev)
		}
	}
	// As booted, sshd runs in the container: the check must fail.
	if st := got["ssh.service-enabled"].GetStatus(); st != statFail {
		t.Errorf("ssh.service-enabled: %v", st)
	}
	// auditd is masked at boot: installed, not running.
	if st := got["audit.auditd"].GetStatus(); st != statFail {
		t.Errorf("audit.auditd: %v\n%s", st, evidenceText(got["audit.auditd"]))
	}
}

// Without a bus the check says so and decides from unit files and
// processes: a root with an enabled unit link fails, a masked one passes.
func TestSSHDServiceWithoutBus(t *testing.T) {
	mk := func(t *testing.T, links map[string]string) *hostfs.Root {
		dir := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(dir, "usr/sbin"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "usr/sbin/sshd"), []byte("\x7fELF"), 0o755))
		must(t, os.MkdirAll(filepath.Join(dir, "lib/systemd/system"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "lib/systemd/system/ssh.service"), []byte("[Service]\n"), 0o644))
		for l, target := range links {
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, l)), 0o755))
			must(t, os.Symlink(target, filepath.Join(dir, l)))
		}
		r, err := hostfs.Open(dir)
		must(t, err)
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	cases := []struct {
		name  string
		links map[string]string
		want  nodewardv1.FindingStatus
	}{
		{"enabled", map[string]string{"etc/systemd/system/multi-user.target.wants/ssh.service": "/lib/systemd/system/ssh.service"}, statFail},
		{"masked", map[string]string{"etc/systemd/system/ssh.service": "/dev/null"}, statUnknown},
		{"disabled", nil, statUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := &source.Env{Root: mk(t, c.links), Proc: t.TempDir()}
			fs := runSSHDService(context.Background(), env, &nodewardv1.Snapshot{})
			if fs[0].GetStatus() != c.want {
				t.Fatalf("status %v, want %v: %v", fs[0].GetStatus(), c.want, fs[0].GetEvidence())
			}
			if !strings.Contains(evidenceText(fs[0]), "not reachable over D-Bus") {
				t.Errorf("missing the no-bus reason: %v", fs[0].GetEvidence())
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func evidenceText(f *nodewardv1.Finding) string {
	var b strings.Builder
	for _, e := range f.GetEvidence() {
		b.WriteString(e.GetSource() + " | " + e.GetValue() + " | " + e.GetReason() + "\n")
	}
	return b.String()
}
