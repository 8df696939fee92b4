package posture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func TestParseSELinuxConfig(t *testing.T) {
	cases := []struct {
		in   string
		want SELinuxConfig
	}{
		{"# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n", SELinuxConfig{"enforcing", "targeted"}},
		{"SELINUX = Permissive \nSELINUXTYPE=\"mls\"\n", SELinuxConfig{"permissive", "mls"}},
		{"SELINUX=enforcing\nSELINUX=disabled\n", SELinuxConfig{"disabled", ""}},
		{"garbage line\n\x00\x01\nSELINUXTYPE='minimum'", SELinuxConfig{"", "minimum"}},
		{"", SELinuxConfig{}},
	}
	for _, c := range cases {
		got, err := ParseSELinuxConfig(strings.NewReader(c.in))
		if err != nil || got != c.want {
			t.Errorf("ParseSELinuxConfig(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func FuzzParseSELinuxConfig(f *testing.F) {
	f.Add("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
	f.Add("# x\nSELINUX=\"permissive\"")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseSELinuxConfig(strings.NewReader(s))
		if err == nil && c.Mode != strings.ToLower(c.Mode) {
			t.Fatalf("mode not lower-cased: %q", c.Mode)
		}
	})
}

// selinuxRoot writes a host root with an selinuxfs tree (enforce) and a
// boot configuration; an empty value leaves the file out.
func selinuxRoot(t *testing.T, enforce, config string) *hostfs.Root {
	t.Helper()
	dir := t.TempDir()
	if enforce != "" {
		must(t, os.MkdirAll(filepath.Join(dir, "sys/fs/selinux"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "sys/fs/selinux/enforce"), []byte(enforce), 0o644))
	}
	if config != "" {
		must(t, os.MkdirAll(filepath.Join(dir, "etc/selinux"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "etc/selinux/config"), []byte(config), 0o644))
	}
	r, err := hostfs.Open(dir)
	must(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestJudgeSELinux(t *testing.T) {
	cases := []struct {
		name, enforce, config string
		mode, mismatch        nodewardv1.FindingStatus
	}{
		{"enforcing", "1", "SELINUX=enforcing\nSELINUXTYPE=targeted\n", statPass, statPass},
		{"permissive", "0", "SELINUX=permissive\n", statFail, statPass},
		{"enforcing now, permissive at boot", "1", "SELINUX=permissive\n", statPass, statFail},
		{"permissive now, enforcing at boot", "0", "SELINUX=enforcing\n", statFail, statFail},
		{"disabled in kernel, enforcing configured", "", "SELINUX=enforcing\n", statFail, statFail},
		{"no selinux at all", "", "", statNA, statNA},
		{"garbage enforce", "\x00\xffjunk", "SELINUX=enforcing\n", statError, statError},
		{"enforcing without config", "1", "", statPass, statFail},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := judgeSELinux(readSELinux(selinuxRoot(t, c.enforce, c.config)))
			if len(fs) != 2 {
				t.Fatalf("%d findings", len(fs))
			}
			if fs[0].GetStatus() != c.mode || fs[1].GetStatus() != c.mismatch {
				t.Errorf("mode %v mismatch %v, want %v %v\n%s%s", fs[0].GetStatus(), fs[1].GetStatus(), c.mode, c.mismatch, evidenceText(fs[0]), evidenceText(fs[1]))
			}
		})
	}
}

// On the live root the library answers; it must agree with what the
// selinuxfs tree says when read as a plain directory.
func TestSELinuxLiveAgreesWithTree(t *testing.T) {
	live, err := hostfs.Open("/")
	must(t, err)
	defer func() { _ = live.Close() }()
	got, err := readSELinuxRuntime(live)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/sys/fs/selinux/enforce")
	want := "disabled"
	if err == nil {
		want = map[string]string{"1": "enforcing", "0": "permissive"}[strings.TrimSpace(string(b))]
	}
	if got.Mode != want {
		t.Errorf("opencontainers/selinux says %s, /sys/fs/selinux says %s", got.Mode, want)
	}
}
