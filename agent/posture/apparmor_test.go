package posture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func TestParseAppArmorProfiles(t *testing.T) {
	in := "docker-default (enforce)\n/usr/sbin/tcpdump (enforce)\nnvidia_modprobe (complain)\n" +
		"/usr/lib/snapd/snap-confine//mount-namespace-capture-helper (enforce)\nunprivileged_userns (unconfined)\n" +
		"weird name (with parens) (kill)\n"
	p, err := ParseAppArmorProfiles(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != 6 || p.ByMode["enforce"] != 3 || p.ByMode["complain"] != 1 || p.ByMode["kill"] != 1 || p.ByMode["unconfined"] != 1 {
		t.Errorf("got %+v", p)
	}
	if p.String() != "complain=1 enforce=3 kill=1 unconfined=1" {
		t.Errorf("String() = %q", p.String())
	}
	if _, err := ParseAppArmorProfiles(strings.NewReader("no mode here\n")); err == nil {
		t.Error("a line without (mode) parsed")
	}
}

func FuzzParseAppArmorProfiles(f *testing.F) {
	f.Add("docker-default (enforce)\n/usr/bin/man (complain)\n")
	f.Add("x (")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseAppArmorProfiles(strings.NewReader(s))
		if err != nil {
			return
		}
		n := 0
		for _, c := range p.ByMode {
			n += c
		}
		if n != p.Total {
			t.Fatalf("mode counts %d != total %d", n, p.Total)
		}
	})
}

func apparmorRoot(t *testing.T, enabled, profiles string) *hostfs.Root {
	t.Helper()
	dir := t.TempDir()
	if enabled != "" {
		must(t, os.MkdirAll(filepath.Join(dir, "sys/module/apparmor/parameters"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, apparmorEnabledPath), []byte(enabled), 0o644))
	}
	if profiles != "" {
		must(t, os.MkdirAll(filepath.Join(dir, "sys/kernel/security/apparmor"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, apparmorProfilesPath), []byte(profiles), 0o644))
	}
	r, err := hostfs.Open(dir)
	must(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestJudgeAppArmorAndLSM(t *testing.T) {
	cases := []struct {
		name, enabled, profiles string
		aa, lsm                 nodewardv1.FindingStatus
	}{
		{"enforcing", "Y\n", "docker-default (enforce)\n/usr/bin/man (complain)\n", statPass, statPass},
		{"complain only", "Y\n", "/usr/bin/man (complain)\n", statFail, statFail},
		{"disabled", "N\n", "", statFail, statFail},
		{"no module", "", "", statNA, statFail},
		{"enabled, securityfs not mounted", "Y\n", "", statError, statUnknown},
		{"garbage profiles", "Y\n", "\x00\x01\x02binary", statError, statUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := apparmorRoot(t, c.enabled, c.profiles)
			aa := judgeAppArmor(readAppArmor(root))
			lsm := judgeLSM(readSELinux(root), readAppArmor(root))
			if aa.GetStatus() != c.aa || lsm.GetStatus() != c.lsm {
				t.Errorf("apparmor %v lsm %v, want %v %v\n%s%s", aa.GetStatus(), lsm.GetStatus(), c.aa, c.lsm, evidenceText(aa), evidenceText(lsm))
			}
		})
	}
	// SELinux enforcing alone passes the LSM check.
	if f := judgeLSM(readSELinux(selinuxRoot(t, "1", "SELINUX=enforcing\n")), readAppArmor(apparmorRoot(t, "", ""))); f.GetStatus() != statPass {
		t.Errorf("SELinux enforcing: %v", f.GetStatus())
	}
}
