package posture

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// sshdCfgRoot writes a Debian 12 root with openssh-server and the given
// files under it.
func sshdCfgRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	base := map[string]string{
		"etc/os-release":      "ID=debian\nVERSION_ID=\"12\"\n",
		"var/lib/dpkg/status": "Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.2p1-2+deb12u10\n\n",
		"etc/passwd":          "root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/bash\n",
		"etc/group":           "root:x:0:\nalice:x:1001:\n",
	}
	for k, v := range files {
		base[k] = v
	}
	for name, content := range base {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func runSSHDConfigOn(t *testing.T, root string) map[string]*nodewardv1.Finding {
	t.Helper()
	r, err := hostfs.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	got := map[string]*nodewardv1.Finding{}
	for _, f := range runSSHDConfig(context.Background(), &source.Env{Root: r, Proc: "/proc"}, &nodewardv1.Snapshot{}) {
		if got[f.GetCheckId()] != nil {
			t.Errorf("check id %s reported twice", f.GetCheckId())
		}
		got[f.GetCheckId()] = f
		if f.GetTitle() == "" || f.GetRemediation() == "" || len(f.GetReferences()) == 0 || len(f.GetEvidence()) == 0 {
			t.Errorf("%s: incomplete finding %v", f.GetCheckId(), f)
		}
		if f.GetSeverity() == nodewardv1.Severity_SEVERITY_UNSPECIFIED || f.GetStatus() == nodewardv1.FindingStatus_FINDING_STATUS_UNSPECIFIED {
			t.Errorf("%s: severity or status unset", f.GetCheckId())
		}
	}
	return got
}

func wantStatuses(t *testing.T, got map[string]*nodewardv1.Finding, want map[string]nodewardv1.FindingStatus) {
	t.Helper()
	if len(got) != len(sshdCfgChecks)+1 {
		t.Errorf("got %d findings, want %d", len(got), len(sshdCfgChecks)+1)
	}
	for id, st := range want {
		f := got[id]
		if f == nil {
			t.Errorf("%s: missing", id)
			continue
		}
		if f.GetStatus() != st {
			t.Errorf("%s: status %v, want %v; evidence %v", id, f.GetStatus(), st, f.GetEvidence())
		}
	}
}

func TestSSHDConfigChecksFixtures(t *testing.T) {
	for host, build := range map[string]string{
		"debian-12-bookworm-minbase-openssh": "OpenSSH 9.2p1 (debian 1:9.2p1-2+deb12u",
		"ubuntu-22.04-jammy-minbase-openssh": "OpenSSH 8.9p1 (ubuntu 1:8.9p1-3)",
	} {
		t.Run(host, func(t *testing.T) {
			got := runSSHDConfigOn(t, testutil.CopyFixtureRoot(t, host))
			wantStatuses(t, got, map[string]nodewardv1.FindingStatus{
				"ssh.permit-root-login":              statFail, // default prohibit-password
				"ssh.password-authentication":        statFail, // default yes
				"ssh.kbd-interactive-authentication": statPass, // set no by the distribution's file
				"ssh.permit-empty-passwords":         statPass,
				"ssh.weak-ciphers":                   statPass,
				"ssh.weak-macs":                      statFail, // umac-64 is in the default list
				"ssh.weak-kex":                       statPass,
				"ssh.listen-non-loopback":            statFail,
				"ssh.match-loosens":                  statPass,
			})
			ev := got["ssh.permit-root-login"].GetEvidence()[0]
			if ev.GetValue() != "permitrootlogin without-password" || !strings.Contains(ev.GetReason(), "default of "+build) {
				t.Errorf("root login evidence = %v", ev)
			}
			ev = got["ssh.kbd-interactive-authentication"].GetEvidence()[0]
			if !strings.Contains(ev.GetReason(), "set at /etc/ssh/sshd_config:") {
				t.Errorf("kbd evidence does not name the line: %v", ev)
			}
		})
	}
}

func TestSSHDConfigChecksHardened(t *testing.T) {
	root := sshdCfgRoot(t, map[string]string{
		"etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication yes\n",
		"etc/ssh/sshd_config.d/00-hardening.conf": `PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
MACs -umac-64*,hmac-sha1-96*
ListenAddress 127.0.0.1
ListenAddress [::1]
Match User alice
	MaxAuthTries 3
	PasswordAuthentication no
`,
	})
	wantStatuses(t, runSSHDConfigOn(t, root), map[string]nodewardv1.FindingStatus{
		"ssh.permit-root-login": statPass, "ssh.password-authentication": statPass,
		"ssh.kbd-interactive-authentication": statPass, "ssh.permit-empty-passwords": statPass,
		"ssh.weak-ciphers": statPass, "ssh.weak-macs": statPass, "ssh.weak-kex": statPass,
		"ssh.listen-non-loopback": statPass, "ssh.match-loosens": statPass,
	})
}

func TestSSHDConfigChecksMatchLoosens(t *testing.T) {
	root := sshdCfgRoot(t, map[string]string{
		"etc/ssh/sshd_config":                  "PasswordAuthentication no\nPermitRootLogin no\nCiphers +3des-cbc\nKexAlgorithms +diffie-hellman-group1-sha1\nInclude /etc/ssh/sshd_config.d/*.conf\n",
		"etc/ssh/sshd_config.d/50-vendor.conf": "Match Address 10.0.0.0/8\n\tPasswordAuthentication yes\n\tPermitRootLogin yes\nMatch User alice\n\tPasswordAuthentication no\n",
	})
	got := runSSHDConfigOn(t, root)
	wantStatuses(t, got, map[string]nodewardv1.FindingStatus{
		"ssh.password-authentication": statPass, "ssh.permit-root-login": statPass,
		"ssh.weak-ciphers": statFail, "ssh.weak-kex": statFail, "ssh.match-loosens": statFail,
	})
	f := got["ssh.match-loosens"]
	if !strings.Contains(f.GetTitle(), "Match Address 10.0.0.0/8 (/etc/ssh/sshd_config.d/50-vendor.conf:1)") || strings.Contains(f.GetTitle(), "alice") {
		t.Errorf("title does not name exactly the loosening block: %q", f.GetTitle())
	}
	if len(f.GetEvidence()) != 2 || f.GetSeverity() != sevHigh {
		t.Errorf("want 2 loosened settings at high severity, got %v %v", f.GetSeverity(), f.GetEvidence())
	}
	if ev := got["ssh.weak-ciphers"].GetEvidence()[0]; !strings.Contains(ev.GetReason(), "3des-cbc") {
		t.Errorf("weak cipher evidence = %v", ev)
	}
}

// TestSSHDConfigChecksLocalPortBlock: sshd -T without lport refuses a
// Match LocalPort block, but sshd itself runs with it; the checks judge
// the main section and name the block if it loosens.
func TestSSHDConfigChecksLocalPortBlock(t *testing.T) {
	root := sshdCfgRoot(t, map[string]string{
		"etc/ssh/sshd_config": "PasswordAuthentication no\nPort 22\nPort 2222\nMatch LocalPort 2222\n\tPasswordAuthentication yes\n",
	})
	got := runSSHDConfigOn(t, root)
	wantStatuses(t, got, map[string]nodewardv1.FindingStatus{
		"ssh.password-authentication": statPass, "ssh.match-loosens": statFail,
	})
	if title := got["ssh.match-loosens"].GetTitle(); !strings.Contains(title, "Match LocalPort 2222 (/etc/ssh/sshd_config:4)") {
		t.Errorf("title = %q", title)
	}
}

func TestSSHDConfigChecksUnhappy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  nodewardv1.FindingStatus
		says  string
	}{
		{"no sshd at all", map[string]string{"var/lib/dpkg/status": ""}, statNA, "not installed"},
		{"installed without config", nil, statError, "is missing"},
		{"config sshd refuses", map[string]string{"etc/ssh/sshd_config": "Match User alice\n\tPort 2222\n"}, statError, "not allowed within a Match block"},
		{"include loop", map[string]string{"etc/ssh/sshd_config": "Include /etc/ssh/sshd_config\n"}, statError, "Too many recursive"},
		{"unknown OpenSSH build", map[string]string{
			"etc/ssh/sshd_config": "PermitRootLogin no\n",
			"var/lib/dpkg/status": "Package: openssh-server\nStatus: install ok installed\nVersion: 1:6.6p1-2\n\n",
		}, statUnknown, "no known defaults"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runSSHDConfigOn(t, sshdCfgRoot(t, tc.files))
			for id, f := range got {
				if f.GetStatus() != tc.want || !strings.Contains(f.GetEvidence()[0].GetReason(), tc.says) {
					t.Errorf("%s: %v %q, want %v saying %q", id, f.GetStatus(), f.GetEvidence()[0].GetReason(), tc.want, tc.says)
				}
			}
		})
	}
}

// TestSSHDConfigChecksHostile: a huge file, garbage and a link out of the
// root give error findings that say why, never a panic or a guess.
func TestSSHDConfigChecksHostile(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside.conf")
	if err := os.WriteFile(outside, []byte("PermitRootLogin yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root string)
		says  string
	}{
		{"1 GiB sparse sshd_config", func(t *testing.T, root string) {
			if err := os.Truncate(filepath.Join(root, "etc/ssh/sshd_config"), 1<<30); err != nil {
				t.Fatal(err)
			}
		}, "exceeds size limit"},
		{"binary garbage", func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, "etc/ssh/sshd_config"), []byte("\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe\nPort \x00\x01"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "sshd would refuse this configuration"},
		{"include through a link out of the root", func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, "etc/ssh/sshd_config"), []byte("Include /etc/ssh/sshd_config.d/*.conf\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(root, "etc/ssh/sshd_config.d"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(root, "etc/ssh/sshd_config.d/x.conf")); err != nil {
				t.Fatal(err)
			}
		}, "file does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := sshdCfgRoot(t, map[string]string{"etc/ssh/sshd_config": ""})
			tc.setup(t, root)
			for id, f := range runSSHDConfigOn(t, root) {
				if f.GetStatus() != statError || !strings.Contains(f.GetEvidence()[0].GetReason(), tc.says) {
					t.Errorf("%s: %v %q, want error saying %q", id, f.GetStatus(), f.GetEvidence()[0].GetReason(), tc.says)
				}
			}
		})
	}
}
