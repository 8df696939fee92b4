package inventory

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// stanza builds one status-file stanza with the fields dpkg-query needs
// to stay quiet.
func stanza(name, status, version, arch string, extra ...string) string {
	var sb strings.Builder
	sb.WriteString("Package: " + name + "\n")
	if status != "" {
		sb.WriteString("Status: " + status + "\n")
	}
	sb.WriteString("Maintainer: Someone <someone@example.org>\n")
	if arch != "" {
		sb.WriteString("Architecture: " + arch + "\n")
	}
	if version != "" {
		sb.WriteString("Version: " + version + "\n")
	}
	for _, e := range extra {
		sb.WriteString(e + "\n")
	}
	sb.WriteString("Description: a package\n multi-line\n .\n description\n")
	return sb.String()
}

// dpkgStatusCases are status files whose reading by the real dpkg-query is
// the expected answer.
var dpkgStatusCases = []struct{ name, status string }{
	{"plain", stanza("a", "install ok installed", "1.0-1", "amd64") + "\n" + stanza("b", "install ok installed", "2.0", "all")},
	{"epochs", stanza("a", "install ok installed", "1:2.0-1", "amd64") + "\n" +
		stanza("b", "install ok installed", "0:3.0", "amd64") + "\n" +
		stanza("c", "install ok installed", "0:1.0:5-1", "amd64") + "\n" +
		stanza("d", "install ok installed", "2:1.0-1-2", "amd64")},
	{"states", stanza("cf", "deinstall ok config-files", "1.0", "amd64") + "\n" +
		stanza("gone", "purge ok not-installed", "", "amd64") + "\n" +
		stanza("half", "install reinstreq half-installed", "1.0", "amd64") + "\n" +
		stanza("held", "hold ok installed", "1.0", "amd64") + "\n" +
		stanza("unpacked", "install ok unpacked", "1.0", "amd64") + "\n" +
		stanza("trig", "install ok triggers-pending", "1.0", "amd64", "Triggers-Pending: ldconfig") + "\n" +
		stanza("await", "install ok triggers-awaited", "1.0", "amd64", "Triggers-Awaited: trig") + "\n" +
		stanza("halfnover", "install reinstreq half-installed", "", "amd64")},
	{"no status", stanza("nostatus", "", "1.0", "amd64") + "\n" + stanza("b", "install ok installed", "1.0", "amd64")},
	{"sources", stanza("a", "install ok installed", "1.0-1", "amd64", "Source: asrc") + "\n" +
		stanza("b", "install ok installed", "1.0-1+b1", "amd64", "Source: bsrc (1.0-1)") + "\n" +
		stanza("c", "install ok installed", "1:1.0-1", "amd64")},
	{"multi-arch", stanza("libx", "install ok installed", "1.0", "amd64", "Multi-Arch: same") + "\n" +
		stanza("libx", "install ok installed", "1.0", "i386", "Multi-Arch: same")},
	{"field case and spacing", "package: a\nSTATUS:   install ok installed  \nmaintainer: x\nArchitecture:amd64\nVERSION: 1.0-1\ndescription: d\n"},
	{"blank lines", "\n\n" + stanza("a", "install ok installed", "1.0", "amd64") + "\n\n\n" + stanza("b", "install ok installed", "1.0", "amd64") + "\n\n"},
	{"no final newline", stanza("a", "install ok installed", "1.0", "amd64") + "\n" + strings.TrimSuffix(stanza("b", "install ok installed", "1.0", "amd64"), "\n")},
	{"whitespace-only line continues a field", stanza("a", "install ok installed", "1.0", "amd64") + "   \n" + stanza("b", "install ok installed", "1.0", "amd64")},
	{"whitespace-only line at the end", stanza("a", "install ok installed", "1.0", "amd64") + " \n"},
	{"whitespace-only line opening a stanza", stanza("a", "install ok installed", "1.0", "amd64") + "\n  \n"},
	{"continuation of a kept field", "Package: a\n\tStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\nMaintainer: x\nDescription: d\n"},
	{"CRLF", strings.ReplaceAll(stanza("a", "install ok installed", "1.0", "amd64"), "\n", "\r\n")},
	{"upper-case name", stanza("LibFoo", "install ok installed", "1.0", "amd64")},
	{"name starting with a digit", stanza("0ad", "install ok installed", "1.0", "amd64")},
	{"name starting with a dash", stanza("-a", "install ok installed", "1.0", "amd64")},
	{"name with a space", stanza("a b", "install ok installed", "1.0", "amd64")},
	{"installed without version", strings.Replace(stanza("a", "install ok installed", "", "amd64"), "", "", 1)},
	{"config-files without version", stanza("a", "deinstall ok config-files", "", "amd64")},
	{"empty version", stanza("a", "install ok installed", "", "amd64", "Version:")},
	{"two instances", stanza("a", "install ok installed", "1.0", "amd64") + "\n" + stanza("a", "install ok installed", "2.0", "amd64")},
	{"two arches, not multi-arch same", stanza("a", "install ok installed", "1.0", "amd64") + "\n" + stanza("a", "install ok installed", "1.0", "i386")},
	{"multi-arch same, same arch twice", stanza("a", "install ok installed", "1.0", "amd64", "Multi-Arch: same") + "\n" + stanza("a", "install ok installed", "2.0", "amd64", "Multi-Arch: same")},
	{"installed then not-installed", stanza("a", "install ok installed", "1.0", "amd64") + "\n" + stanza("a", "purge ok not-installed", "", "amd64")},
	{"selection beside an instance", stanza("a", "purge ok not-installed", "", "amd64") + "\n" + stanza("a", "install ok installed", "1.0", "i386")},
	{"pending triggers while installed", stanza("a", "install ok installed", "1.0", "amd64", "Triggers-Pending: x")},
	{"awaited triggers while installed", stanza("a", "install ok installed", "1.0", "amd64", "Triggers-Awaited: x")},
	{"triggers-pending without triggers", stanza("a", "install ok triggers-pending", "1.0", "amd64")},
	{"triggers-awaited without triggers", stanza("a", "install ok triggers-awaited", "1.0", "amd64")},
	{"awaited while unpacked", stanza("a", "install ok unpacked", "1.0", "amd64", "Triggers-Awaited: x")},
	{"bad epoch", stanza("a", "install ok installed", "1.2:3", "amd64")},
	{"empty epoch", stanza("a", "install ok installed", ":1.0", "amd64")},
	{"nothing after epoch", stanza("a", "install ok installed", "1:", "amd64")},
	{"version with space", stanza("a", "install ok installed", "1.0 2", "amd64")},
	{"line without colon", stanza("a", "install ok installed", "1.0", "amd64") + "garbage line\n"},
	{"duplicate field", stanza("a", "install ok installed", "1.0", "amd64", "Version: 2.0")},
	{"bad status word", stanza("a", "install ok bogus", "1.0", "amd64")},
	{"short status", stanza("a", "install installed", "1.0", "amd64")},
	{"old hold flag", stanza("a", "install hold installed", "1.0", "amd64")},
	{"purge wanted, still installed", stanza("a", "purge ok installed", "1.0", "amd64")},
	{"missing package", "Status: install ok installed\nVersion: 1.0\n"},
}

func dpkgQueryOrSkip(t *testing.T) string {
	t.Helper()
	dq, err := exec.LookPath("dpkg-query")
	if err != nil {
		testutil.Unavailable(t, "dpkg-query not installed")
	}
	return dq
}

// TestParseDpkgStatusMatchesDpkgQuery feeds each case to the real
// dpkg-query (--admindir) and to the parser: both accept or both refuse,
// and what they list is the same.
func TestParseDpkgStatusMatchesDpkgQuery(t *testing.T) {
	dq := dpkgQueryOrSkip(t)
	for _, tc := range dpkgStatusCases {
		t.Run(tc.name, func(t *testing.T) {
			admin := t.TempDir()
			if err := os.WriteFile(filepath.Join(admin, "status"), []byte(tc.status), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(dq, "--admindir", admin, "-W", "-f",
				`${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\t${source:Package}\t${source:Version}\n`)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, qerr := cmd.Output()

			recs, perr := parseDpkgStatus(strings.NewReader(tc.status))
			if (qerr != nil) != (perr != nil) {
				t.Fatalf("dpkg-query error %v (%s), parser error %v", qerr, strings.TrimSpace(stderr.String()), perr)
			}
			if qerr != nil {
				t.Logf("both refuse: dpkg-query: %s; parser: %v", lastLine(stderr.String()), perr)
				return
			}
			var got []string
			var pkgs []*nodewardv1.Package
			for _, r := range recs {
				if r.pkg.State != "not-installed" {
					pkgs = append(pkgs, r.pkg)
				}
			}
			got = rowsFor("dpkg", pkgs)
			want := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			if string(out) == "" {
				want = nil
			}
			diffRows(t, tc.name, got, want)
		})
	}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l[len(l)-1])
}

// TestDpkgUpdatesJournal checks that a journal entry in updates/ overrides
// the status file for dpkg-query and for us alike.
func TestDpkgUpdatesJournal(t *testing.T) {
	dq := dpkgQueryOrSkip(t)
	root := t.TempDir()
	admin := filepath.Join(root, "var/lib/dpkg")
	if err := os.MkdirAll(filepath.Join(admin, "updates"), 0o755); err != nil {
		t.Fatal(err)
	}
	status := stanza("a", "install ok installed", "1.0", "amd64") + "\n" + stanza("b", "install ok installed", "1.0", "amd64")
	writeFile(t, filepath.Join(admin, "status"), status)
	writeFile(t, filepath.Join(admin, "updates/0001"), stanza("a", "install ok half-configured", "2.0", "amd64"))
	writeFile(t, filepath.Join(admin, "updates/0002"), stanza("c", "install ok unpacked", "3.0", "amd64"))
	writeFile(t, filepath.Join(admin, "updates/tmp.i"), "not a journal entry")
	out, err := exec.Command(dq, "--admindir", admin, "-W", "-f",
		`${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\t${source:Package}\t${source:Version}\n`).Output()
	if err != nil {
		t.Fatal(err)
	}
	r, err := hostfs.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pkgs, err := readDpkg(r)
	if err != nil {
		t.Fatal(err)
	}
	diffRows(t, "updates", rowsFor("dpkg", pkgs), strings.Split(strings.TrimRight(string(out), "\n"), "\n"))
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDpkgInstallTimes(t *testing.T) {
	root := t.TempDir()
	admin := filepath.Join(root, "var/lib/dpkg")
	if err := os.MkdirAll(filepath.Join(admin, "info"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/log"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(admin, "status"), stanza("plain", "install ok installed", "1.0", "amd64")+"\n"+
		stanza("libx", "install ok installed", "1.0", "amd64", "Multi-Arch: same")+"\n"+
		stanza("logged", "install ok installed", "1:2.0-1", "all")+"\n"+
		stanza("unknown", "install ok installed", "1.0", "amd64")+"\n"+
		stanza("cf", "deinstall ok config-files", "1.0", "amd64"))
	t1 := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 := time.Date(2024, 4, 2, 11, 0, 0, 0, time.UTC)
	writeFile(t, filepath.Join(admin, "info/plain.list"), "/.\n")
	writeFile(t, filepath.Join(admin, "info/libx:amd64.list"), "/.\n")
	writeFile(t, filepath.Join(admin, "info/cf.list"), "/.\n")
	for _, f := range []struct {
		p string
		t time.Time
	}{{"info/plain.list", t1}, {"info/libx:amd64.list", t2}} {
		if err := os.Chtimes(filepath.Join(admin, f.p), f.t, f.t); err != nil {
			t.Fatal(err)
		}
	}
	// dpkg.log is in local time; this host root says UTC+2 (Etc/GMT-2).
	zone, err := os.ReadFile("/usr/share/zoneinfo/Etc/GMT-2")
	if err != nil {
		testutil.Unavailable(t, "tzdata not installed")
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/localtime"), string(zone))
	writeFile(t, filepath.Join(root, "var/log/dpkg.log"), ""+
		"2024-05-01 09:00:00 startup archives unpack\n"+
		"2024-05-01 09:00:01 status installed logged:all 1:1.0-1\n"+
		"2024-05-02 12:30:00 status half-configured logged:all 1:2.0-1\n"+
		"2024-05-02 12:30:05 status installed logged:all 1:2.0-1\n"+
		"garbage\n")
	r, err := hostfs.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pkgs, err := readDpkg(r)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*nodewardv1.Package{}
	for _, p := range pkgs {
		got[p.Name] = p
	}
	check := func(name string, want time.Time, src nodewardv1.InstallTimeSource) {
		t.Helper()
		p := got[name]
		if src == nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_UNSPECIFIED {
			if p.InstallTime != nil {
				t.Errorf("%s: install time %v, want none", name, p.InstallTime.AsTime())
			}
			return
		}
		if p.InstallTime == nil || !p.InstallTime.AsTime().Equal(want) || p.InstallTimeSource != src {
			t.Errorf("%s: install time %v from %v, want %v from %v", name, p.GetInstallTime().AsTime(), p.InstallTimeSource, want, src)
		}
	}
	check("plain", t1, nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_INFO_MTIME)
	check("libx", t2, nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_INFO_MTIME)
	check("logged", time.Date(2024, 5, 2, 10, 30, 5, 0, time.UTC), nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_LOG)
	check("unknown", time.Time{}, nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_UNSPECIFIED)
	check("cf", time.Time{}, nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_UNSPECIFIED)
}

// TestDpkgLogFixture reads the Debian fixture's real dpkg.log: every
// package debootstrap installed has its time from it.
func TestDpkgLogFixture(t *testing.T) {
	root, err := hostfs.Open(filepath.Join(testutil.FixtureHost(t, "debian-12-bookworm-minbase-openssh"), "root"))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	pkgs, err := readDpkg(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkgs {
		if p.InstallTimeSource != nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_LOG || p.InstallTime.AsTime().Year() < 2020 {
			t.Errorf("%s %s: install time %v from %v", p.Name, p.Version, p.GetInstallTime().AsTime(), p.InstallTimeSource)
		}
	}
}

func TestParseDpkgVersion(t *testing.T) {
	for _, tc := range []struct {
		in, out  string
		epoch    uint32
		explicit bool
		err      bool
	}{
		{in: "1.0-1", out: "1.0-1"},
		{in: "1:1.0-1", out: "1:1.0-1", epoch: 1, explicit: true},
		{in: "0:1.0", out: "1.0", explicit: true},
		{in: "0:1.0:5-1", out: "0:1.0:5-1", explicit: true},
		{in: "1.0-1-2", out: "1.0-1-2"},
		{in: " 2.0 ", out: "2.0"},
		{in: "", err: true},
		{in: "a:1.0", err: true},
		{in: "1:", err: true},
		{in: "1.0-", err: true},
		{in: "-1", err: true},
		{in: "1 0", err: true},
	} {
		v, err := parseDpkgVersion(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && (v.String() != tc.out || v.epoch != tc.epoch || v.explicitEpoch != tc.explicit) {
			t.Errorf("%q: %q epoch %d (explicit %v), want %q %d (%v)", tc.in, v.String(), v.epoch, v.explicitEpoch, tc.out, tc.epoch, tc.explicit)
		}
	}
}

func FuzzParseDpkgStatus(f *testing.F) {
	for _, tc := range dpkgStatusCases {
		f.Add([]byte(tc.status))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := parseDpkgStatus(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.pkg.Name == "" || r.pkg.State == "" {
				t.Fatalf("accepted a record without name or state: %v", r.pkg)
			}
		}
	})
}

func FuzzParseDpkgLog(f *testing.F) {
	f.Add([]byte("2024-05-02 12:30:05 status installed logged:all 1:2.0-1\n2024-05-02 12:30:00 status half-configured x:amd64 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		times, _ := parseDpkgLog(bytes.NewReader(b), time.UTC)
		for k := range times {
			if !strings.Contains(k, ":") || !strings.Contains(k, " ") {
				t.Fatalf("bad key %q", k)
			}
		}
	})
}
