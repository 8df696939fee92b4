package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/internal/testutil"
)

const apkBusybox = `C:Q1xOlCsdvx4O0gnKWoFCNKjz2quRE=
P:busybox
V:1.36.0-r9
A:x86_64
S:509000
I:958464
T:Size optimized toolbox of many common UNIX utilities
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1683554530
c:b64afa8c0c7b6cbd2d5d8b7c3a2c1bd1e4a6c5b2
D:so:libc.musl-x86_64.so.1
p:cmd:busybox=1.36.0-r9
r:busybox-initscripts
q:100
F:bin
R:busybox
a:0:0:755
Z:Q1xOlCsdvx4O0gnKWoFCNKjz2quRE=
F:etc
M:0:0:755
R:securetty
Z:Q14VDshgWFleuDbp4jqXk+UNES65Q=

`

const apkNoFiles = `P:alpine-base
V:3.18.0-r0
A:x86_64
o:alpine-base
t:1683554530

`

func TestParseAPKInstalled(t *testing.T) {
	for _, tc := range []struct {
		name, db string
		want     []string // name-version arch origin
		err      string
	}{
		{name: "two packages", db: apkBusybox + apkNoFiles, want: []string{"busybox-1.36.0-r9 x86_64 busybox", "alpine-base-3.18.0-r0 x86_64 alpine-base"}},
		{name: "no final blank line", db: strings.TrimSuffix(apkBusybox+apkNoFiles, "\n"), want: []string{"busybox-1.36.0-r9 x86_64 busybox", "alpine-base-3.18.0-r0 x86_64 alpine-base"}},
		{name: "blank lines between", db: "\n\n" + apkNoFiles + "\n\n" + apkBusybox, want: []string{"alpine-base-3.18.0-r0 x86_64 alpine-base", "busybox-1.36.0-r9 x86_64 busybox"}},
		{name: "one-byte line ends a package", db: strings.Replace(apkNoFiles, "t:1683554530\n", "t:1683554530\nx\n", 1), want: []string{"alpine-base-3.18.0-r0 x86_64 alpine-base"}},
		{name: "unknown field before files is ignored", db: strings.Replace(apkBusybox, "c:", "g:tag\nX:new\nc:", 1), want: []string{"busybox-1.36.0-r9 x86_64 busybox"}},
		{name: "empty", db: "", want: nil},
		{name: "no version", db: "P:invalidPackageWithoutAVersion\n\n" + apkNoFiles, err: "no version"},
		{name: "no name", db: "V:1.0\nA:x86_64\n\n", err: "no name"},
		{name: "not a field", db: "P:a\nV:1\nhello\n\n", err: "not a field"},
		{name: "file before directory", db: "P:a\nV:1\nR:file\n\n", err: "out of place"},
		{name: "checksum before file", db: "P:a\nV:1\nF:dir\nZ:Q1abc=\n\n", err: "out of place"},
		{name: "directory mode before directory", db: "P:a\nV:1\nM:0:0:755\n\n", err: "out of place"},
		{name: "directory before name", db: "V:1\nF:dir\nP:a\n\n", err: "out of place"},
		{name: "unknown field after files", db: strings.Replace(apkBusybox, "F:etc\n", "F:etc\nY:future\n", 1), err: "newer apk"},
		{name: "truncated after name", db: apkBusybox + "C:Q1abc=\nP:musl\n", err: "no version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkgs, err := parseAPKInstalled(strings.NewReader(tc.db))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errAPKFormat) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pkgs {
				got = append(got, p.Name+"-"+p.Version+" "+p.Arch+" "+p.SourceName)
				if p.State != "installed" || p.SourceVersion != p.Version || p.InstallTime != nil {
					t.Errorf("%s: state %q source version %q install time %v", p.Name, p.State, p.SourceVersion, p.InstallTime)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAPKMatchesApkInfo checks the Alpine fixture against apk info -v, the
// other listing the real apk wrote beside it.
func TestAPKMatchesApkInfo(t *testing.T) {
	host := testutil.FixtureHost(t, "apk-osv-scalibr")
	want, err := os.ReadFile(filepath.Join(host, "expected-apk-info-v.txt"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(filepath.Join(host, "root", apkInstalledPath))
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := parseAPKInstalled(strings.NewReader(string(db)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pkgs {
		got = append(got, p.Name+"-"+p.Version)
	}
	diffRows(t, "apk info -v", got, strings.Fields(string(want)))
}

func FuzzParseAPKInstalled(f *testing.F) {
	f.Add([]byte(apkBusybox + apkNoFiles))
	f.Add([]byte("P:invalidPackageWithoutAVersion\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkgs, err := parseAPKInstalled(strings.NewReader(string(b)))
		if err != nil {
			if !errors.Is(err, errAPKFormat) && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for _, p := range pkgs {
			if p.State != "installed" {
				t.Fatalf("state %q", p.State)
			}
		}
	})
}
