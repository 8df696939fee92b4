package pkgver

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
)

var pairs = [][2]string{
	{"1.0", "1.0"}, {"1.0", "1.1"}, {"1.0~rc1", "1.0"}, {"1.0~rc1", "1.0~rc2"}, {"1.0a", "1.0"},
	{"1.0+b1", "1.0"}, {"1.0.1", "1.0a"}, {"3.0.8", "3.0.17"}, {"3.0.2", "3.0.2"}, {"010", "10"},
	{"1.2.3", "1.2.3.0"}, {"2.38.1", "2.38"}, {"1_0", "1.0"}, {"a", "1"}, {"1.0^", "1.0"},
	{"1.0^git1", "1.0.1"}, {"1.0^git1", "1.0^git2"}, {"1.0~", "1.0~~"}, {"1.a", "1.1"}, {"5.4.0", "5.10.0"},
	{"0.9.8zh", "0.9.8zg"}, {"2.0.0rc1", "2.0.0"}, {"1.0.0.1", "1.0.0.1a"}, {"", "1"}, {"1.0-", "1.0"},
	{"9.9p1", "9.2p1"}, {"1:", "1"}, {"1.0.2k", "1.0.2zk"}, {"20230311", "20230311.1"}, {"7.4.1", "7.4.01"},
}

// TestRPMAgainstRpm uses the real rpm as the oracle for rpmvercmp.
func TestRPMAgainstRpm(t *testing.T) {
	if _, err := exec.LookPath("rpm"); err != nil {
		testutil.Unavailable(t, "rpm is not installed")
	}
	// rpm.vercmp parses epoch and release itself, and refuses empty strings:
	// give it plain version strings only.
	var cases [][2]string
	var lua strings.Builder
	for _, p := range pairs {
		if p[0] == "" || p[1] == "" || strings.ContainsAny(p[0]+p[1], ":-") {
			continue
		}
		cases = append(cases, p)
		fmt.Fprintf(&lua, "io.write(rpm.vercmp(%q,%q), ' ') ", p[0], p[1])
	}
	out, err := exec.Command("rpm", "--eval", "%{lua:"+lua.String()+"}").Output()
	if err != nil {
		t.Fatalf("rpm --eval: %v", err)
	}
	want := strings.Fields(string(out))
	if len(want) != len(cases) {
		t.Fatalf("rpm printed %d results for %d pairs: %q", len(want), len(cases), out)
	}
	for i, p := range cases {
		if got := fmt.Sprint(RPM(p[0], p[1])); got != want[i] {
			t.Errorf("RPM(%q, %q) = %s, rpm says %s", p[0], p[1], got, want[i])
		}
	}
}

// TestDpkgAgainstDpkg uses the real dpkg --compare-versions as the oracle.
func TestDpkgAgainstDpkg(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		testutil.Unavailable(t, "dpkg is not installed")
	}
	full := []string{"1:1.0-1", "1.0-1", "2:0.1", "1.0-1ubuntu1", "1.0-1~deb12u1", "3.0.17-1~deb12u2", "3.0.8-1", "0:3.0.8"}
	var cases [][2]string
	for _, p := range pairs {
		if strings.ContainsAny(p[0]+p[1], "_^") || p[0] == "" || p[1] == "" || strings.HasSuffix(p[0], "-") || strings.HasSuffix(p[0], ":") {
			continue // not valid dpkg versions
		}
		cases = append(cases, p)
	}
	for _, a := range full {
		for _, b := range full {
			cases = append(cases, [2]string{a, b})
		}
	}
	for _, p := range cases {
		want := 0
		for _, c := range []struct {
			op string
			v  int
		}{{"lt", -1}, {"gt", 1}} {
			if exec.Command("dpkg", "--compare-versions", p[0], c.op, p[1]).Run() == nil {
				want = c.v
			}
		}
		if got := DpkgFull(p[0], p[1]); got != want {
			t.Errorf("DpkgFull(%q, %q) = %d, dpkg says %d", p[0], p[1], got, want)
		}
	}
}

func TestSatisfies(t *testing.T) {
	rpmPkg := &nodewardv1.Package{Name: "openssl-libs", Version: "3.0.8", Release: "1.amzn2023.0.3", Epoch: proto.Uint32(1), Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_RPM}
	debPkg := &nodewardv1.Package{Name: "openssl", Version: "3.0.17-1~deb12u2", Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG}
	for _, c := range []struct {
		p    *nodewardv1.Package
		expr string
		want bool
	}{
		{rpmPkg, "<3.0.8", false}, {rpmPkg, "=3.0.8", true}, {rpmPkg, "<3.0.9", true}, {rpmPkg, "<3.0.8-2", true},
		{rpmPkg, "<2:3.0.0", true}, {rpmPkg, ">=1:3.0.8-1.amzn2023.0.3", true}, {rpmPkg, ">3.0.10", false},
		{debPkg, "<3.0.8", false}, {debPkg, ">=3.0.17", true}, {debPkg, "<3.0.17-1", true}, {debPkg, "<1:3.0", true},
	} {
		op, v := ParseOp(c.expr)
		if got := Satisfies(c.p, op, Parse(v)); got != c.want {
			t.Errorf("%s %s: got %v, want %v", c.p.GetName(), c.expr, got, c.want)
		}
	}
}

func FuzzCompare(f *testing.F) {
	for _, p := range pairs {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		// Antisymmetry is what every sort and range query relies on.
		if RPM(a, b) != -RPM(b, a) {
			t.Fatalf("RPM not antisymmetric on %q %q", a, b)
		}
		if DpkgFull(a, b) != -DpkgFull(b, a) {
			t.Fatalf("Dpkg not antisymmetric on %q %q", a, b)
		}
		_ = Parse(a)
	})
}
