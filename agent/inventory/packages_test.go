package inventory

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// pkgRow is the comparable part of a package: what the real tools print.
type pkgRow struct {
	name, epoch, version, release, arch, state, installTime, sourceName, sourceVersion string
}

func rowOf(p *nodewardv1.Package) pkgRow {
	r := pkgRow{name: p.Name, version: p.Version, release: p.Release, arch: p.Arch, state: p.State,
		sourceName: p.SourceName, sourceVersion: p.SourceVersion, epoch: "(none)"}
	if p.Epoch != nil {
		r.epoch = strconv.FormatUint(uint64(*p.Epoch), 10)
	}
	if p.InstallTime != nil {
		r.installTime = strconv.FormatInt(p.InstallTime.Seconds, 10)
	}
	return r
}

func readTSV(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		rows = append(rows, strings.Split(l, "\t"))
	}
	return rows
}

// diffRows compares two multisets of rows, order ignored.
func diffRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	slices.Sort(got)
	slices.Sort(want)
	if slices.Equal(got, want) {
		return
	}
	var missing, extra []string
	for _, w := range want {
		if i, ok := slices.BinarySearch(got, w); !ok {
			missing = append(missing, w)
		} else {
			got = slices.Delete(got, i, i+1)
		}
	}
	extra = got
	t.Errorf("%s: %d missing, %d unexpected\nmissing: %q\nunexpected: %q", what, len(missing), len(extra), head(missing), head(extra))
}

func head(s []string) []string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

// expectedRows turns a fixture host's expected* files into comparable rows,
// in the same shape rowsFor gives for our inventory.
func expectedRows(t *testing.T, hostDir string) (rows []string, kind string) {
	t.Helper()
	switch {
	case exists(filepath.Join(hostDir, "expected-rpm-qa.tsv")):
		// NAME EPOCH VERSION RELEASE ARCH INSTALLTIME; rpm prints (none).
		for _, f := range readTSV(t, filepath.Join(hostDir, "expected-rpm-qa.tsv")) {
			if f[4] == "(none)" {
				f[4] = ""
			}
			rows = append(rows, strings.Join(f, "\t"))
		}
		return rows, "rpm"
	case exists(filepath.Join(hostDir, "expected-dpkg-query.tsv")):
		// Package Version Architecture Status, joined with the source variant.
		src := map[string]string{}
		for _, f := range readTSV(t, filepath.Join(hostDir, "expected-dpkg-query-source.tsv")) {
			src[f[0]] = f[1] + "\t" + f[2]
		}
		for _, f := range readTSV(t, filepath.Join(hostDir, "expected-dpkg-query.tsv")) {
			state := strings.Fields(f[3])[2]
			rows = append(rows, strings.Join([]string{f[0], f[1], f[2], state, src[f[0]]}, "\t"))
		}
		return rows, "dpkg"
	case exists(filepath.Join(hostDir, "expected-apk-list-I.txt")):
		// "NAME-VERSION ARCH {ORIGIN} (LICENSE) [installed]"
		b, err := os.ReadFile(filepath.Join(hostDir, "expected-apk-list-I.txt"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(l)
			rows = append(rows, strings.Join([]string{f[0], f[1], strings.Trim(f[2], "{}")}, "\t"))
		}
		return rows, "apk"
	}
	return nil, ""
}

func rowsFor(kind string, pkgs []*nodewardv1.Package) []string {
	var rows []string
	for _, p := range pkgs {
		r := rowOf(p)
		switch kind {
		case "rpm":
			rows = append(rows, strings.Join([]string{r.name, r.epoch, r.version, r.release, r.arch, r.installTime}, "\t"))
		case "dpkg":
			rows = append(rows, strings.Join([]string{r.name, r.version, r.arch, r.state, r.sourceName, r.sourceVersion}, "\t"))
		case "apk":
			rows = append(rows, strings.Join([]string{r.name + "-" + r.version, r.arch, r.sourceName}, "\t"))
		}
	}
	return rows
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// fixtureHostsWithDB lists the fixture hosts that have a package database
// and the answer a real tool gave for it.
func fixtureHostsWithDB(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(testutil.FixturesDir(t), "hosts")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, e := range ents {
		if _, kind := expectedRows(t, filepath.Join(dir, e.Name())); kind != "" {
			hosts = append(hosts, e.Name())
		}
	}
	if len(hosts) < 8 {
		t.Fatalf("only %d fixture hosts with a package database: %v", len(hosts), hosts)
	}
	return hosts
}

// TestPackagesMatchRealTools reads every fixture host's database and
// compares it with what rpm -qa, dpkg-query -W or apk list -I printed for
// it: same count, same name, epoch, version, release, arch (and dpkg state
// and source, rpm install time).
func TestPackagesMatchRealTools(t *testing.T) {
	for _, name := range fixtureHostsWithDB(t) {
		t.Run(name, func(t *testing.T) {
			hostDir := testutil.FixtureHost(t, name)
			want, kind := expectedRows(t, hostDir)
			root, err := hostfs.Open(filepath.Join(hostDir, "root"))
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			inv, err := ReadPackages(context.Background(), root)
			if err != nil {
				t.Fatalf("ReadPackages: %v", err)
			}
			if len(inv.Packages) != len(want) {
				t.Errorf("%d packages, the real tool listed %d", len(inv.Packages), len(want))
			}
			diffRows(t, name, rowsFor(kind, inv.Packages), want)
			if len(inv.Databases) != 1 || inv.Databases[0].PackageCount != uint32(len(want)) || inv.Databases[0].Error != "" {
				t.Errorf("databases = %v", inv.Databases)
			}
			for _, p := range inv.Packages {
				if p.GpgPubkey != (p.Name == "gpg-pubkey") {
					t.Errorf("%s: gpg_pubkey = %v", p.Name, p.GpgPubkey)
				}
				if kind == "rpm" && (p.InstallTime == nil || p.InstallTimeSource != nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_RPM_HEADER) {
					t.Errorf("%s: install time %v from %v", p.Name, p.InstallTime, p.InstallTimeSource)
				}
			}
		})
	}
}

// TestReportPackagesFixtures is the end-to-end form: the real agent binary,
// `report --root hosts/NAME/root --only packages -o json`, against the
// same expected files.
func TestReportPackagesFixtures(t *testing.T) {
	hosts := fixtureHostsWithDB(t)
	bin := testutil.BuildBinary(t, "./agent", "nodeward-agent")
	for _, name := range hosts {
		t.Run(name, func(t *testing.T) {
			hostDir := testutil.FixtureHost(t, name)
			want, kind := expectedRows(t, hostDir)
			snap := runReport(t, bin, filepath.Join(hostDir, "root"), 0)
			if got := len(snap.GetPackages().GetPackages()); got != len(want) {
				t.Errorf("%d packages, the real tool listed %d", got, len(want))
			}
			diffRows(t, name, rowsFor(kind, snap.GetPackages().GetPackages()), want)
			if len(snap.Sources) != 1 || snap.Sources[0].Name != "packages" || !snap.Sources[0].Ok {
				t.Errorf("sources = %v", snap.Sources)
			}
		})
	}
	t.Run("apk-trivy-apk refused", func(t *testing.T) {
		hostDir := testutil.FixtureHost(t, "apk-trivy-apk")
		snap := runReport(t, bin, filepath.Join(hostDir, "root"), 0)
		stderr, err := os.ReadFile(filepath.Join(hostDir, "expected-apk-info-v.stderr"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(stderr), "database file format error") {
			t.Fatalf("the real apk's stderr no longer says why: %s", stderr)
		}
		inv := snap.GetPackages()
		if len(inv.GetPackages()) != 0 || len(inv.GetDatabases()) != 1 {
			t.Fatalf("refused database still listed packages: %v", inv)
		}
		if e := inv.Databases[0].Error; !strings.Contains(e, "database file format error") || !strings.Contains(e, "invalidPackageWithoutAVersion") {
			t.Errorf("database error = %q", e)
		}
		if len(snap.Sources) != 1 || snap.Sources[0].Ok || !strings.Contains(snap.Sources[0].Error, "database file format error") {
			t.Errorf("source status = %v", snap.Sources)
		}
	})
	t.Run("bottlerocket is image-based", func(t *testing.T) {
		root := testutil.CopyFixtureRoot(t, "os-bottlerocket-1.34.0-aws-ecs-2")
		inv := runReport(t, bin, root, 0).GetPackages()
		if !inv.GetImageBased() || inv.GetImageVersion() != "1.34.0" || len(inv.GetDatabases()) != 0 {
			t.Errorf("inventory = %v", inv)
		}
	})
}

func runReport(t *testing.T, bin, root string, wantExit int) *nodewardv1.Snapshot {
	t.Helper()
	cmd := exec.Command(bin, "report", "--root", root, "--only", "packages", "-o", "json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != wantExit {
		t.Fatalf("report exit %d (%v), want %d; stderr: %s", code, err, wantExit, stderr.String())
	}
	snap := &nodewardv1.Snapshot{}
	if err := protojson.Unmarshal(stdout.Bytes(), snap); err != nil {
		t.Fatalf("decode report: %v\n%s", err, stdout.String())
	}
	return snap
}

// TestPackagesMatchDpkgQueryLive compares the inventory of this machine
// with the real dpkg-query -W, the oracle for dpkg semantics. Another
// test may install a package meanwhile, so a mismatch is retried with a
// fresh pair of reads before it counts.
func TestPackagesMatchDpkgQueryLive(t *testing.T) {
	if _, err := os.Stat("/var/lib/dpkg/status"); err != nil {
		testutil.Unavailable(t, "this machine has no dpkg database")
	}
	dq, err := exec.LookPath("dpkg-query")
	if err != nil {
		testutil.Unavailable(t, "dpkg-query not installed")
	}
	root, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	read := func() (got, want []string, dpkg []*nodewardv1.Package) {
		out, err := exec.Command(dq, "-W", "-f",
			`${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\t${source:Package}\t${source:Version}\n`).Output()
		if err != nil {
			t.Fatalf("dpkg-query: %v", err)
		}
		inv, err := ReadPackages(context.Background(), root)
		if err != nil {
			t.Fatalf("ReadPackages: %v", err)
		}
		for _, p := range inv.Packages {
			if p.Manager == nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG {
				dpkg = append(dpkg, p)
			}
		}
		got, want = rowsFor("dpkg", dpkg), strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		slices.Sort(got)
		slices.Sort(want)
		return got, want, dpkg
	}
	got, want, dpkg := read()
	for try := 0; try < 3 && !slices.Equal(got, want); try++ {
		time.Sleep(2 * time.Second)
		got, want, dpkg = read()
	}
	if len(dpkg) != len(want) {
		t.Errorf("%d dpkg packages, dpkg-query lists %d", len(dpkg), len(want))
	}
	diffRows(t, "live dpkg", got, want)
	// Every installed package has an info/*.list file, so a time from it.
	for _, p := range dpkg {
		if p.State == "installed" && p.InstallTimeSource != nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_INFO_MTIME {
			t.Errorf("%s: install time source %v", p.Name, p.InstallTimeSource)
		}
	}
}

// TestPackagesMatchRPMLive runs the real rpm (Debian's, 4.18) over a copy
// of the bdb and sqlite fixture databases as a second oracle beside the
// expected files (Debian builds rpm without ndb).
func TestPackagesMatchRPMLive(t *testing.T) {
	rpmBin, err := exec.LookPath("rpm")
	if err != nil {
		testutil.Unavailable(t, "rpm not installed (apt-get install rpm)")
	}
	for _, tc := range []struct{ host, backend string }{
		{"rpm-amazonlinux2", "bdb_ro"}, {"rpm-epoch-hello-bdb", "bdb_ro"},
		{"rpm-amazonlinux2023-plain", "sqlite"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			root := testutil.CopyFixtureRoot(t, tc.host)
			out, err := exec.Command(rpmBin, "--dbpath", filepath.Join(root, "var/lib/rpm"), "--define", "_db_backend "+tc.backend,
				"-qa", "--qf", `%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{INSTALLTIME}\n`).Output()
			if err != nil || len(out) == 0 {
				t.Fatalf("rpm could not read the %s database: %v", tc.backend, err)
			}
			var want []string
			for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
				f := strings.Split(l, "\t")
				if f[4] == "(none)" {
					f[4] = ""
				}
				want = append(want, strings.Join(f, "\t"))
			}
			r, err := hostfs.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			inv, err := ReadPackages(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			diffRows(t, tc.host, rowsFor("rpm", inv.Packages), want)
		})
	}
}

// treeDigest hashes every file's path, mode, size, mtime and content under
// dir, to show a read left the tree exactly as it was.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %d %d\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestPackagesLeaveHostUntouched reads each rpm backend from a writable
// copy and checks that no byte, mtime or file (journal, -shm, lock) in
// the host tree changed.
func TestPackagesLeaveHostUntouched(t *testing.T) {
	for _, host := range []string{"rpm-amazonlinux2", "rpm-amazonlinux2023-plain", "rpm-sle15-bci", "debian-12-bookworm-minbase-openssh", "apk-osv-scalibr"} {
		t.Run(host, func(t *testing.T) {
			root := testutil.CopyFixtureRoot(t, host)
			before := treeDigest(t, root)
			r, err := hostfs.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			inv, err := ReadPackages(context.Background(), r)
			if err != nil || len(inv.Packages) == 0 {
				t.Fatalf("ReadPackages: %d packages, %v", len(inv.Packages), err)
			}
			if after := treeDigest(t, root); after != before {
				t.Errorf("reading the databases changed the host tree")
			}
		})
	}
}

// TestPackagesCorruptDatabase truncates or garbles each kind of database
// in a root that also holds a healthy one: the bad one carries an error,
// the source fails with the reason, the healthy one still reports, and the
// rest of the snapshot (OS facts) still goes out.
func TestPackagesCorruptDatabase(t *testing.T) {
	type damage func(t *testing.T, path string)
	truncateTo := func(frac float64) damage {
		return func(t *testing.T, p string) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, int64(float64(fi.Size())*frac)); err != nil {
				t.Fatal(err)
			}
		}
	}
	garble := func(t *testing.T, p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(b) / 3; i < len(b)/3+4096 && i < len(b); i++ {
			b[i] ^= 0xa5
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, host, db string
		damage         damage
		wantErr        string
	}{
		{"bdb truncated", "rpm-amazonlinux2", "var/lib/rpm/Packages", truncateTo(0.5), "truncated"},
		{"bdb garbled", "rpm-amazonlinux2", "var/lib/rpm/Packages", garble, "rpm database"},
		{"ndb truncated", "rpm-sle15-bci", "var/lib/rpm/Packages.db", truncateTo(0.5), "truncated"},
		{"sqlite truncated", "rpm-amazonlinux2023-plain", "var/lib/rpm/rpmdb.sqlite", truncateTo(0.5), "rpm database"},
		{"sqlite not a database", "rpm-amazonlinux2023-plain", "var/lib/rpm/rpmdb.sqlite", garbleHeader, "rpm database"},
		{"dpkg garbled", "dpkg-ubuntu-18.04-trivy", "var/lib/dpkg/status", garble, "dpkg database"},
		{"apk truncated mid-stanza", "apk-osv-scalibr", "lib/apk/db/installed", truncateApkAfterName, "database file format error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := testutil.CopyFixtureRoot(t, tc.host)
			tc.damage(t, filepath.Join(root, tc.db))
			// A healthy database beside it: the Debian fixture's dpkg status,
			// or an rpm one for the dpkg case.
			healthy, healthyDB := "debian-12-bookworm-minbase-openssh", "var/lib/dpkg/status"
			if strings.HasPrefix(tc.db, "var/lib/dpkg") {
				healthy, healthyDB = "rpm-sle15-bci", "var/lib/rpm/Packages.db"
			}
			copyFile(t, filepath.Join(testutil.FixtureHost(t, healthy), "root", healthyDB), filepath.Join(root, healthyDB))
			copyFile(t, filepath.Join(testutil.FixtureHost(t, "os-debian-12"), "root/etc/os-release"), filepath.Join(root, "etc/os-release"))

			r, err := hostfs.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			snap, err := source.Run(context.Background(), &source.Env{Root: r, Proc: "/proc"}, []string{"os", "packages"})
			if err != nil {
				t.Fatal(err)
			}
			var st *nodewardv1.SourceStatus
			for _, s := range snap.Sources {
				if s.Name == "packages" {
					st = s
				}
			}
			if st == nil || st.Ok || !strings.Contains(st.Error, tc.wantErr) {
				t.Errorf("packages source status = %v, want an error containing %q", st, tc.wantErr)
			}
			if snap.GetNode().GetOs().GetId() != "debian" {
				t.Errorf("the OS facts did not go out with the failed source: %v", snap.GetNode())
			}
			var bad, good *nodewardv1.PackageDatabase
			for _, d := range snap.GetPackages().GetDatabases() {
				if d.Path == healthyDB {
					good = d
				} else {
					bad = d
				}
			}
			if bad == nil || bad.Error == "" {
				t.Errorf("damaged database carries no error: %v", bad)
			}
			if good == nil || good.Error != "" || good.PackageCount == 0 {
				t.Errorf("healthy database did not report: %v", good)
			}
			t.Logf("error: %s", bad.GetError())
		})
	}
}

func garbleHeader(t *testing.T, p string) {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("this is not SQLite"), 0); err != nil {
		t.Fatal(err)
	}
}

// truncateApkAfterName cuts the database right after a package's name, as
// an interrupted write would: a package without a version.
func truncateApkAfterName(t *testing.T, p string) {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b[len(b)/2:], []byte("\nP:"))
	if i < 0 {
		t.Fatal("no package in the second half")
	}
	cut := len(b)/2 + i + 1
	cut += bytes.IndexByte(b[cut:], '\n') + 1
	if err := os.WriteFile(p, b[:cut], 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPackagesImageBased covers roots with no package database: image-based
// OSes say so with their image version, anything else is an error.
func TestPackagesImageBased(t *testing.T) {
	for _, tc := range []struct {
		name, osRelease string
		image           bool
		version, err    string
	}{
		{"bottlerocket", "NAME=Bottlerocket\nID=bottlerocket\nVERSION_ID=1.34.0\nBUILD_ID=18d04e52\n", true, "1.34.0", ""},
		{"flatcar", "ID=flatcar\nVERSION_ID=4081.2.0\n", true, "4081.2.0", ""},
		{"systemd image fields", "ID=myos\nVERSION_ID=1\nIMAGE_ID=node\nIMAGE_VERSION=2024.05.1\n", true, "2024.05.1", ""},
		{"ubuntu without dpkg", "ID=ubuntu\nVERSION_ID=22.04\n", false, "", "ubuntu is not a known image-based OS"},
		{"no os-release", "", false, "", "the OS is unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.osRelease != "" {
				if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(root, "etc/os-release"), tc.osRelease)
			}
			r, err := hostfs.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			inv, err := ReadPackages(context.Background(), r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if inv.ImageBased != tc.image || inv.ImageVersion != tc.version || len(inv.Packages) != 0 || len(inv.Databases) != 0 {
				t.Errorf("inventory = %v", inv)
			}
		})
	}
}
