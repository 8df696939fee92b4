package inventory

import (
	"bufio"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/internal/testutil"
)

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		skipped int
	}{
		{"plain and quoted", "ID=debian\nNAME=\"Debian GNU/Linux\"\nVERSION_ID='12'\n",
			map[string]string{"ID": "debian", "NAME": "Debian GNU/Linux", "VERSION_ID": "12"}, 0},
		{"comments and blanks", "# a comment\n\n  ID=x # trailing\n",
			map[string]string{"ID": "x"}, 0},
		{"double-quote escapes", `A="a\"b\\c\$d\e"` + "\n",
			map[string]string{"A": `a"b\c$d\e`}, 0},
		{"single quotes are literal", `A='a\"b$X'` + "\n",
			map[string]string{"A": `a\"b$X`}, 0},
		{"unquoted backslash", `A=a\ b\$c` + "\n",
			map[string]string{"A": "a b$c"}, 0},
		{"concatenated quoting", `A=one"two"'three'` + "\n",
			map[string]string{"A": "onetwothree"}, 0},
		{"multi-line double quote", "A=\"line1\nline2\"\nB=2\n",
			map[string]string{"A": "line1\nline2", "B": "2"}, 0},
		{"line continuation", "A=ab\\\ncd\n",
			map[string]string{"A": "abcd"}, 0},
		{"expansion of earlier names", "V=12\nP=\"Debian $V\"\nQ=${V}x\nR=$NOPE.\n",
			map[string]string{"V": "12", "P": "Debian 12", "Q": "12x", "R": "."}, 0},
		{"later assignment wins", "ID=a\nID=b\n",
			map[string]string{"ID": "b"}, 0},
		{"several assignments on a line", "A=1 B=2; C=3\n",
			map[string]string{"A": "1", "B": "2", "C": "3"}, 0},
		{"a command is skipped, not run", "A=1\nrm -rf /\nB=2\n",
			map[string]string{"A": "1", "B": "2"}, 1},
		{"command substitution is not evaluated", "A=$(id)\nB=`id`\nC=\"$(id)\"\n",
			map[string]string{}, 3},
		{"a relative path alone", "../usr/lib/os-release",
			map[string]string{}, 1},
		{"no trailing newline", "ID=x",
			map[string]string{"ID": "x"}, 0},
		{"CRLF keeps the CR like a shell", "ID=x\r\n",
			map[string]string{"ID": "x\r"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped, err := ParseOSRelease(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("fields = %q, want %q", got, tc.want)
			}
			if len(skipped) != tc.skipped {
				t.Errorf("skipped = %q, want %d", skipped, tc.skipped)
			}
		})
	}
}

func TestParseOSReleaseUnterminatedQuote(t *testing.T) {
	got, skipped, err := ParseOSRelease(strings.NewReader("A=1\nB=\"open\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got["A"] != "1" || len(skipped) != 1 {
		t.Fatalf("got %q skipped %q", got, skipped)
	}
}

// readEnvOracle reads the sorted `env` output the shell oracle recorded.
func readEnvOracle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	env := map[string]string{}
	last := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if start.MatchString(line) {
			k, v, _ := strings.Cut(line, "=")
			env[k] = v
			last = k
		} else if last != "" {
			env[last] += "\n" + line
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// The shell itself exports these; the file does not set them.
	delete(env, "PWD")
	return env
}

// TestOSReleaseMatchesShellOracle compares with what a real shell sourcing
// each fixture's os-release exported.
func TestOSReleaseMatchesShellOracle(t *testing.T) {
	oracles, err := filepath.Glob(filepath.Join(testutil.FixturesDir(t), "hosts", "*", "expected-os-release.env"))
	if err != nil || len(oracles) == 0 {
		t.Fatalf("no os-release oracles found: %v", err)
	}
	for _, oracle := range oracles {
		host := filepath.Base(filepath.Dir(oracle))
		t.Run(host, func(t *testing.T) {
			root, err := hostfs.Open(testutil.CopyFixtureRoot(t, host))
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			osr, err := ReadOSRelease(root)
			if err != nil {
				t.Fatal(err)
			}
			want := readEnvOracle(t, oracle)
			if !maps.Equal(osr.GetFields(), want) {
				t.Errorf("fields = %q\nwant     %q", osr.GetFields(), want)
			}
			if osr.GetId() != want["ID"] || osr.GetVersionId() != want["VERSION_ID"] || osr.GetPrettyName() != want["PRETTY_NAME"] {
				t.Errorf("id/version_id/pretty_name = %q/%q/%q", osr.GetId(), osr.GetVersionId(), osr.GetPrettyName())
			}
		})
	}
}

func FuzzParseOSRelease(f *testing.F) {
	for _, s := range []string{"ID=x\n", `A="a\"b"`, "A='x\nB=$(id)\n", "A=${B\n", "A=\\\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fields, _, err := ParseOSRelease(strings.NewReader(s))
		if err != nil && len(s) <= maxOSReleaseLine {
			t.Fatalf("error on short input: %v", err)
		}
		for k := range fields {
			if !isName(k) {
				t.Fatalf("invalid key %q", k)
			}
		}
	})
}
