package sshdconfig

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/internal/testutil"
)

// sshdT runs this machine's real `sshd -T` on a case root: in a private
// mount namespace the case's etc/ssh, etc/passwd and etc/group (and
// etc/hosts and etc/services, for names in ListenAddress and ports) are
// bind mounted over the real ones, because sshd reads absolute paths.
func sshdT(t *testing.T, root, spec string) (string, error) {
	t.Helper()
	script := `set -e
mount --make-rprivate /
mount --bind "$1/etc/ssh" /etc/ssh
mount --bind "$1/etc/passwd" /etc/passwd
mount --bind "$1/etc/group" /etc/group
mount --bind "$1/etc/hosts" /etc/hosts
mount --bind "$1/etc/services" /etc/services
shift
exec /usr/sbin/sshd "$@"`
	args := []string{"-m", "sh", "-c", script, "sh", root, "-T"}
	if spec != "" {
		args = append(args, "-C", spec)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command("unshare", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// requireRealSSHD gates the oracle tests: root, sshd, unshare and mount.
func requireRealSSHD(t *testing.T) {
	t.Helper()
	testutil.RequirePrivileged(t)
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		testutil.Unavailable(t, "openssh-server is not installed (/usr/sbin/sshd)")
	}
	for _, tool := range []string{"unshare", "mount", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not found")
		}
	}
	// sshd -T refuses to run without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
}

// byKeyword groups sshd -T lines by keyword, keeping their order.
func byKeyword(out string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, _, _ := strings.Cut(line, " ")
		m[k] = append(m[k], line)
	}
	return m
}

// compareKeywords fails for every listed keyword whose lines differ.
func compareKeywords(t *testing.T, label, want string, got []string) int {
	t.Helper()
	w, g := byKeyword(want), byKeyword(strings.Join(got, "\n"))
	n := 0
	for _, k := range Keywords {
		if len(w[k]) == 0 && len(g[k]) == 0 {
			continue
		}
		n++
		if strings.Join(w[k], "\n") != strings.Join(g[k], "\n") {
			t.Errorf("%s: %s\n sshd -T: %q\n ours:    %q", label, k, w[k], g[k])
		}
	}
	return n
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// caseRoot builds a host root for one case: its etc/ssh, the shared users
// and groups, a host key, and this machine's os-release, hosts and
// openssh-server record so the evaluator picks the same build's defaults.
func caseRoot(t *testing.T, name string, hostPkg string) string {
	t.Helper()
	root := t.TempDir()
	copyTree(t, filepath.Join("testdata", "cases", name), root)
	for _, f := range []string{"passwd", "group"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc", f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"/etc/os-release", "/etc/hosts", "/etc/services"} {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			continue // the case brings its own
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	status := "Package: openssh-server\nStatus: install ok installed\nVersion: " + hostPkg + "\n\n"
	if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(root, "etc/ssh/ssh_host_ed25519_key")
	if b, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, b)
	}
	return root
}

// TestOwnCasesAgainstRealSSHD runs every case under testdata/cases through
// this machine's sshd -T, with no -C and with each spec of the case, and
// compares every listed keyword. When sshd refuses the config, so must we.
func TestOwnCasesAgainstRealSSHD(t *testing.T) {
	requireRealSSHD(t)
	host, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = host.Close() }()
	hostProf, err := DetectProfile(host)
	if err != nil {
		t.Fatalf("this machine's sshd: %v", err)
	}
	if !hostProf.Verified {
		testutil.Unavailable(t, "this machine's "+hostProf.Name()+" has no verified profile")
	}
	cases, err := os.ReadDir(filepath.Join("testdata", "cases"))
	if err != nil {
		t.Fatal(err)
	}
	compared, runs, refused := 0, 0, 0
	for _, c := range cases {
		t.Run(c.Name(), func(t *testing.T) {
			root := caseRoot(t, c.Name(), hostProf.Package)
			r, err := hostfs.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = r.Close() }()
			prof, err := DetectProfile(r)
			if err != nil {
				t.Fatal(err)
			}
			specs := []string{""}
			if b, err := os.ReadFile(filepath.Join("testdata", "cases", c.Name(), "specs")); err == nil {
				specs = append(specs, strings.Fields(string(b))...)
			}
			for _, spec := range specs {
				label := "sshd -T"
				if spec != "" {
					label += " -C " + spec
				}
				want, realErr := sshdT(t, root, spec)
				var ci *ConnInfo
				if spec != "" {
					if ci, err = ParseConnSpec(spec, Services(r)); err != nil {
						t.Fatalf("%s: %v", label, err)
					}
				}
				cfg, ourErr := Evaluate(r, prof, ci)
				runs++
				switch {
				case realErr != nil && ourErr != nil:
					refused++
					t.Logf("%s: both refuse: sshd: %v; ours: %v", label, realErr, ourErr)
					// Where sshd names the line, we must name the same one.
					if w, g := lineRE.FindStringSubmatch(realErr.Error()), lineRE.FindStringSubmatch(ourErr.Error()); w != nil && (g == nil || g[1] != w[1]) {
						t.Errorf("%s: sshd refuses at line %s, we at %v", label, w[1], g)
					}
				case realErr != nil:
					t.Errorf("%s: sshd refuses (%v) but we computed:\n%s", label, realErr, strings.Join(cfg.Lines(), "\n"))
				case ourErr != nil:
					t.Errorf("%s: sshd accepts but we fail: %v", label, ourErr)
				default:
					compared += compareKeywords(t, c.Name()+": "+label, want, cfg.Lines())
				}
			}
		})
	}
	t.Logf("%d cases, %d sshd -T runs (%d refused by both), %d keyword comparisons", len(cases), runs, refused, compared)
}

// TestFixturesAgainstRecordedSSHDT compares the fixture hosts with the
// sshd -T output their own distribution's sshd recorded.
func TestFixturesAgainstRecordedSSHDT(t *testing.T) {
	for _, host := range []string{"debian-12-bookworm-minbase-openssh", "ubuntu-22.04-jammy-minbase-openssh"} {
		t.Run(host, func(t *testing.T) {
			root := testutil.CopyFixtureRoot(t, host)
			r, err := hostfs.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = r.Close() }()
			prof, err := DetectProfile(r)
			if err != nil {
				t.Fatal(err)
			}
			if !prof.Verified {
				t.Errorf("fixture %s: profile %s not verified", host, prof.Name())
			}
			for file, spec := range map[string]string{"expected-sshd-T.txt": "", "expected-sshd-T-C-root.txt": "user=root,host=x,addr=1.2.3.4"} {
				want, err := os.ReadFile(filepath.Join(testutil.FixtureHost(t, host), file))
				if err != nil {
					t.Fatal(err)
				}
				var ci *ConnInfo
				if spec != "" {
					if ci, err = ParseConnSpec(spec, nil); err != nil {
						t.Fatal(err)
					}
				}
				cfg, err := Evaluate(r, prof, ci)
				if err != nil {
					t.Fatal(err)
				}
				n := compareKeywords(t, host+"/"+file, string(want), cfg.Lines())
				if n != len(Keywords)-4 { // allow/deny users/groups are unset there
					t.Errorf("%s: compared %d keywords, want %d", file, n, len(Keywords)-4)
				}
			}
		})
	}
}
