package posture

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/posture/options"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func TestAttackSurface(t *testing.T) {
	snap := func(id, ver string, names ...string) *nodewardv1.Snapshot {
		s := &nodewardv1.Snapshot{Node: &nodewardv1.Node{Os: &nodewardv1.OsRelease{Id: id, VersionId: ver}}, Packages: &nodewardv1.PackageInventory{}}
		for _, n := range names {
			s.Packages.Packages = append(s.Packages.Packages, debPkg(n, "1", 1))
		}
		return s
	}
	many := make([]string, 600)
	for i := range many {
		many[i] = "pkg" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strings.Repeat("y", i/26)
	}
	got := byID(runAttackSurface(snap("ubuntu", "22.04", append(many, "tcpdump", "gcc", "telnet")...), defaultAttackSurfaceOptions()))
	if got["attack-surface.package-count"].GetStatus() != statFail || got["attack-surface.unwanted-packages"].GetStatus() != statFail {
		t.Errorf("ubuntu with 603 packages: %v %v", got["attack-surface.package-count"].GetStatus(), got["attack-surface.unwanted-packages"].GetStatus())
	}
	ev := evidenceText(got["attack-surface.unwanted-packages"])
	for _, w := range []string{"tcpdump", "gcc", "telnet", "compiler", "clear-text remote access"} {
		if !strings.Contains(ev, w) {
			t.Errorf("evidence lacks %q: %s", w, ev)
		}
	}
	got = byID(runAttackSurface(snap("amzn", "2", "bash", "coreutils"), defaultAttackSurfaceOptions()))
	if got["attack-surface.package-count"].GetStatus() != statPass || got["attack-surface.unwanted-packages"].GetStatus() != statPass {
		t.Errorf("lean AL2: %v %v", got["attack-surface.package-count"].GetStatus(), got["attack-surface.unwanted-packages"].GetStatus())
	}
	// The list is the user's to extend.
	o := defaultAttackSurfaceOptions()
	o.Unwanted = append(o.Unwanted, unwantedPackage{"coreutils", "site policy"})
	if f := byID(runAttackSurface(snap("amzn", "2", "coreutils"), o))["attack-surface.unwanted-packages"]; f.GetStatus() != statFail {
		t.Errorf("extended list: %v", f.GetStatus())
	}
	if f := byID(runAttackSurface(&nodewardv1.Snapshot{}, o))["attack-surface.unwanted-packages"]; f.GetStatus() != statUnknown {
		t.Errorf("no facts: %v", f.GetStatus())
	}
}

func TestUnusedPorts(t *testing.T) {
	tcp, udp := nodewardv1.Protocol_PROTOCOL_TCP, nodewardv1.Protocol_PROTOCOL_UDP
	any4, lo := nodewardv1.Exposure_EXPOSURE_ANY, nodewardv1.Exposure_EXPOSURE_LOOPBACK
	ports := &nodewardv1.PortInventory{Ports: []*nodewardv1.ListeningPort{
		{Protocol: tcp, Address: "0.0.0.0", Port: 10250, Exposure: any4, Pid: 100, ProcessName: "kubelet", HostNetns: true, Netns: "net:[1]"},
		{Protocol: tcp, Address: "127.0.0.1", Port: 10248, Exposure: lo, Pid: 100, ProcessName: "kubelet", HostNetns: true, Netns: "net:[1]"},
		{Protocol: tcp, Address: "::", Port: 22, Exposure: any4, Pid: 200, ProcessName: "sshd", Exe: "/usr/sbin/sshd", HostNetns: true, Netns: "net:[1]"},
		{Protocol: udp, Address: "0.0.0.0", Port: 111, Exposure: any4, Pid: 300, ProcessName: "rpcbind", HostNetns: true, Netns: "net:[1]"},
		{Protocol: tcp, Address: "0.0.0.0", Port: 8080, Exposure: any4, Pid: 400, ProcessName: "app", Netns: "net:[2]"},
		// A process merely named like an allowed one on another port.
		{Protocol: tcp, Address: "0.0.0.0", Port: 4444, Exposure: any4, Pid: 500, ProcessName: "k", HostNetns: true, Netns: "net:[1]"},
	}}
	f := runUnusedPorts(&nodewardv1.Snapshot{Ports: ports}, defaultPortOptions())[0]
	ev := evidenceText(f)
	if f.GetStatus() != statFail || !strings.Contains(ev, "tcp [::]:22 pid 200 sshd (/usr/sbin/sshd)") || !strings.Contains(ev, "udp 0.0.0.0:111") || !strings.Contains(ev, ":4444") {
		t.Errorf("%v\n%s", f.GetStatus(), ev)
	}
	if strings.Contains(ev, "10250") || strings.Contains(ev, ":8080") {
		t.Errorf("allowed or pod-only listener flagged:\n%s", ev)
	}
	o := defaultPortOptions()
	o.Allow = append(o.Allow, allowedPort{tcp, 22, "sshd", "site"}, allowedPort{udp, 111, "", "site"}, allowedPort{tcp, 4444, "", "site"})
	if f := runUnusedPorts(&nodewardv1.Snapshot{Ports: ports}, o)[0]; f.GetStatus() != statPass {
		t.Errorf("extended allow-list: %v\n%s", f.GetStatus(), evidenceText(f))
	}
	if f := runUnusedPorts(&nodewardv1.Snapshot{}, o)[0]; f.GetStatus() != statUnknown {
		t.Errorf("no facts: %v", f.GetStatus())
	}
}

func TestAuditLogging(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name              string
		files             map[string]string
		tracing           *nodewardv1.TracingStatus
		auditd, journal   nodewardv1.FindingStatus
		tracingWantStatus nodewardv1.FindingStatus
	}{
		{"nothing", nil, nil, statFail, statNA, statUnknown},
		{"persistent journal, auditd enabled on disk", map[string]string{
			"lib/systemd/systemd-journald":                     "",
			"etc/systemd/journald.conf":                        "[Journal]\n#Storage=auto\n",
			"etc/systemd/journald.conf.d/10-disk.conf":         "[Journal]\nStorage=persistent\n",
			"lib/systemd/system/auditd.service":                "[Service]\n",
			"etc/audit/rules.d/audit.rules":                    "-D\n-b 8192\n-w /etc/passwd -p wa -k identity\n-a always,exit -F arch=b64 -S execve\n",
			"etc/systemd/system/multi-user.target.wants/.keep": "",
		}, &nodewardv1.TracingStatus{State: nodewardv1.TracingState_TRACING_STATE_ACTIVE}, statUnknown, statPass, statPass},
		{"volatile journal", map[string]string{
			"lib/systemd/systemd-journald":            "",
			"etc/systemd/journald.conf":               "[Journal]\nStorage=persistent\n",
			"run/systemd/journald.conf.d/50-vol.conf": "[Journal]\nStorage=volatile\n",
		}, &nodewardv1.TracingStatus{State: nodewardv1.TracingState_TRACING_STATE_UNAVAILABLE, Reason: "no BTF"}, statFail, statFail, statFail},
		{"auto without /var/log/journal", map[string]string{"usr/lib/systemd/systemd-journald": ""}, nil, statFail, statFail, statUnknown},
		{"auto with /var/log/journal", map[string]string{"usr/lib/systemd/systemd-journald": "", "var/log/journal/x": ""}, nil, statFail, statPass, statUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := rootWith(t, c.files)
			got := byID(runAuditLogging(ctx, env, &nodewardv1.Snapshot{Node: &nodewardv1.Node{Tracing: c.tracing}}))
			for id, st := range map[string]nodewardv1.FindingStatus{"audit.auditd": c.auditd, "audit.journald-persistent": c.journal, "audit.nodeward-tracing": c.tracingWantStatus} {
				if got[id].GetStatus() != st {
					t.Errorf("%s: %v, want %v\n%s", id, got[id].GetStatus(), st, evidenceText(got[id]))
				}
			}
		})
	}
}

func FuzzParseJournaldStorage(f *testing.F) {
	f.Add("[Journal]\nStorage=persistent\n")
	f.Add("[Other]\nStorage=none\n[Journal]\n;x\n")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseJournaldStorage(strings.NewReader(s))
		if err == nil && v != strings.ToLower(v) {
			t.Fatalf("not lower-cased: %q", v)
		}
	})
}

func FuzzCountAuditRules(f *testing.F) {
	f.Add("-w /etc/passwd -p wa\n-a always,exit -S execve\n# c\n-D\n")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := countAuditRules(strings.NewReader(s))
		if err == nil && n > strings.Count(s, "\n")+1 {
			t.Fatalf("%d rules in %d lines", n, strings.Count(s, "\n")+1)
		}
	})
}

func TestSSM(t *testing.T) {
	ctx := context.Background()
	installed := rootWith(t, map[string]string{"usr/bin/amazon-ssm-agent": "", "usr/lib/systemd/system/amazon-ssm-agent.service": "[Service]\n"})
	if f := runSSM(ctx, installed, &nodewardv1.Snapshot{})[0]; f.GetStatus() != statUnknown {
		t.Errorf("installed, no bus, no /proc: %v\n%s", f.GetStatus(), evidenceText(f))
	}
	if f := runSSM(ctx, rootWith(t, nil), &nodewardv1.Snapshot{})[0]; f.GetStatus() != statFail {
		t.Errorf("absent: %v", f.GetStatus())
	}
	// A real process whose comm is the agent's, seen in this machine's /proc.
	bin := filepath.Join(t.TempDir(), "amazon-ssm-agent")
	sleep, err := os.ReadFile("/bin/sleep")
	must(t, err)
	must(t, os.WriteFile(bin, sleep, 0o755))
	cmd := exec.Command(bin, "30")
	must(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	installed.Proc = "/proc"
	if f := runSSM(ctx, installed, &nodewardv1.Snapshot{})[0]; f.GetStatus() != statPass || !strings.Contains(evidenceText(f), fmt.Sprintf("pid %d comm amazon-ssm-agen", cmd.Process.Pid)) {
		t.Errorf("running: %v\n%s", f.GetStatus(), evidenceText(f))
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if f := runSSM(ctx, installed, &nodewardv1.Snapshot{})[0]; f.GetStatus() != statFail {
		t.Errorf("stopped, live /proc: %v\n%s", f.GetStatus(), evidenceText(f))
	}
	br := &nodewardv1.Snapshot{Node: &nodewardv1.Node{Os: &nodewardv1.OsRelease{Id: "bottlerocket"}}}
	if f := runSSM(ctx, rootWith(t, nil), br)[0]; f.GetStatus() != statUnknown || !strings.Contains(evidenceText(f), "control container") {
		t.Errorf("bottlerocket: %v\n%s", f.GetStatus(), evidenceText(f))
	}
}

// Options reach the checks as values: an allow-listed port passes, an
// extra package fails, thresholds move the verdict, the EC2 lookup is set
// only when opted in.
func TestOptionsFlowIntoChecks(t *testing.T) {
	p := options.Default()
	port, err := options.ParsePort("tcp/22/sshd")
	must(t, err)
	p.AllowPorts = append(p.AllowPorts, port)
	p.UnwantedPackages = []string{"bash"}
	p.PatchWarnDays, p.PatchFailDays = 1, 2

	ssh := &nodewardv1.Snapshot{Ports: &nodewardv1.PortInventory{Ports: []*nodewardv1.ListeningPort{
		{Protocol: nodewardv1.Protocol_PROTOCOL_TCP, Address: "0.0.0.0", Port: 22, Exposure: nodewardv1.Exposure_EXPOSURE_ANY, ProcessName: "sshd", HostNetns: true, Netns: "net:[1]"}}}}
	if f := runUnusedPorts(ssh, portOptionsFrom(options.Default()))[0]; f.GetStatus() != statFail {
		t.Errorf("default allow-list: %v", f.GetStatus())
	}
	if f := runUnusedPorts(ssh, portOptionsFrom(p))[0]; f.GetStatus() != statPass {
		t.Errorf("extended allow-list: %v", f.GetStatus())
	}
	pk := &nodewardv1.Snapshot{Packages: &nodewardv1.PackageInventory{Packages: []*nodewardv1.Package{debPkg("bash", "5", 5)}}}
	if f := byID(runAttackSurface(pk, attackSurfaceOptionsFrom(p)))["attack-surface.unwanted-packages"]; f.GetStatus() != statFail {
		t.Errorf("extended package list: %v", f.GetStatus())
	}
	if f := lastPackageChange(pk.GetPackages(), patchOptionsFrom(options.Default(), testNow)); f.GetStatus() != statPass {
		t.Errorf("5 days, default thresholds: %v", f.GetStatus())
	}
	if f := lastPackageChange(pk.GetPackages(), patchOptionsFrom(p, testNow)); f.GetStatus() != statFail || f.GetSeverity() != sevMedium {
		t.Errorf("5 days, fail at 2: %v %v", f.GetStatus(), f.GetSeverity())
	}
	if encryptionOptionsFrom(options.Default()).Lookup != nil {
		t.Error("EC2 lookup on by default")
	}
	p.VolumeLookup = func(context.Context, []string) (map[string]options.Volume, error) { return nil, nil }
	if encryptionOptionsFrom(p).Lookup == nil {
		t.Error("EC2 lookup not set when opted in")
	}
}
