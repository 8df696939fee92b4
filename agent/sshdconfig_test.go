package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/posture/sshdconfig"
	"github.com/nodeward/nodeward/internal/testutil"
)

// TestSSHDConfigCommandMatchesRecordedSSHDT runs the sshd-config command
// over the fixture hosts and compares every line it prints with the line
// for the same keyword that the distribution's own sshd -T recorded.
func TestSSHDConfigCommandMatchesRecordedSSHDT(t *testing.T) {
	for _, host := range []string{"debian-12-bookworm-minbase-openssh", "ubuntu-22.04-jammy-minbase-openssh"} {
		root := testutil.CopyFixtureRoot(t, host)
		for file, args := range map[string][]string{
			"expected-sshd-T.txt":        {"--root", root},
			"expected-sshd-T-C-root.txt": {"--root", root, "-C", "user=root,host=x,addr=1.2.3.4"},
		} {
			t.Run(host+"/"+file, func(t *testing.T) {
				want, err := os.ReadFile(filepath.Join(testutil.FixtureHost(t, host), file))
				if err != nil {
					t.Fatal(err)
				}
				var out, errb bytes.Buffer
				c := sshdConfigCmd()
				c.SetArgs(args)
				c.SetOut(&out)
				c.SetErr(&errb)
				if err := c.Execute(); err != nil {
					t.Fatalf("sshd-config %v: %v", args, err)
				}
				if errb.Len() > 0 {
					t.Errorf("stderr: %s", errb.String())
				}
				recorded := map[string][]string{}
				for _, l := range strings.Split(strings.TrimSpace(string(want)), "\n") {
					k, _, _ := strings.Cut(l, " ")
					recorded[k] = append(recorded[k], l)
				}
				printed := map[string][]string{}
				for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
					k, _, _ := strings.Cut(l, " ")
					printed[k] = append(printed[k], l)
				}
				for _, k := range sshdconfig.Keywords {
					if strings.Join(printed[k], "\n") != strings.Join(recorded[k], "\n") {
						t.Errorf("%s: printed %q, sshd -T recorded %q", k, printed[k], recorded[k])
					}
				}
				if len(printed) < 20 {
					t.Errorf("printed only %d keywords:\n%s", len(printed), out.String())
				}
			})
		}
	}
}

func TestSSHDConfigCommandRejects(t *testing.T) {
	for _, args := range [][]string{
		{"--root", t.TempDir()},
		{"--root", testutil.CopyFixtureRoot(t, "debian-12-bookworm-minbase-openssh"), "-C", "user=root,colour=blue"},
	} {
		c := sshdConfigCmd()
		c.SetArgs(args)
		var out bytes.Buffer
		c.SetOut(&out)
		c.SetErr(&out)
		if err := c.Execute(); err == nil {
			t.Errorf("sshd-config %v: no error; printed %s", args, out.String())
		}
	}
}
