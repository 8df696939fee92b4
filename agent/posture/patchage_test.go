package posture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func daysAgo(d int) *timestamppb.Timestamp {
	return timestamppb.New(testNow.Add(-time.Duration(d) * 24 * time.Hour))
}

func rpmPkg(name, ver, rel string, ago int) *nodewardv1.Package {
	return &nodewardv1.Package{Name: name, Version: ver, Release: rel, Arch: "x86_64", InstallTime: daysAgo(ago),
		InstallTimeSource: nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_RPM_HEADER, Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_RPM, State: "installed"}
}

func debPkg(name, ver string, ago int) *nodewardv1.Package {
	return &nodewardv1.Package{Name: name, Version: ver, Arch: "amd64", InstallTime: daysAgo(ago),
		InstallTimeSource: nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_LOG, Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG, State: "installed"}
}

func rootWith(t *testing.T, files map[string]string) *source.Env {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644))
	}
	r, err := hostfs.Open(dir)
	must(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return &source.Env{Root: r, Proc: t.TempDir()}
}

func byID(fs []*nodewardv1.Finding) map[string]*nodewardv1.Finding {
	m := map[string]*nodewardv1.Finding{}
	for _, f := range fs {
		m[f.GetCheckId()] = f
	}
	return m
}

func TestPatchAge(t *testing.T) {
	o := patchOptions{WarnDays: 30, FailDays: 90, Now: testNow}
	al2 := &nodewardv1.Snapshot{
		Node: &nodewardv1.Node{KernelRelease: "5.10.220-209.869.amzn2.x86_64", Os: &nodewardv1.OsRelease{Id: "amzn", VersionId: "2"}},
		Packages: &nodewardv1.PackageInventory{Packages: []*nodewardv1.Package{
			rpmPkg("bash", "4.2.46", "34.amzn2", 200),
			rpmPkg("kernel", "5.10.220", "209.869.amzn2", 100),
			rpmPkg("kernel", "5.10.225", "213.878.amzn2", 45),
			rpmPkg("openssl-libs", "1.0.2k", "24.amzn2.0.12", 45),
		}},
	}
	got := byID(runPatchAge(rootWith(t, map[string]string{
		"etc/eks/release": "BASE_AMI_ID=\"ami-0123\"\nBUILD_TIME=\"Tue Jun  4 21:57:37 UTC 2024\"\nBUILD_KERNEL=\"5.10.217\"\nAMI_NAME=\"amazon-eks-node-1.29-v20240605\"\n",
	}), al2, o))
	want := map[string]nodewardv1.FindingStatus{
		"patch.last-package-change": statFail, // 45 days: warn
		"patch.kernel-age":          statFail, // 100 days
		"patch.reboot-required":     statFail, // a newer kernel is installed
		"patch.image-age":           statFail,
	}
	for id, st := range want {
		if got[id].GetStatus() != st {
			t.Errorf("%s: %v, want %v\n%s", id, got[id].GetStatus(), st, evidenceText(got[id]))
		}
	}
	if got["patch.last-package-change"].GetSeverity() != sevLow || got["patch.kernel-age"].GetSeverity() != sevMedium {
		t.Errorf("severities: warn %v, fail %v", got["patch.last-package-change"].GetSeverity(), got["patch.kernel-age"].GetSeverity())
	}
	if !strings.Contains(evidenceText(got["patch.reboot-required"]), "kernel 5.10.225-213.878.amzn2") {
		t.Errorf("reboot evidence: %s", evidenceText(got["patch.reboot-required"]))
	}
	if !strings.Contains(evidenceText(got["patch.image-age"]), "ami-0123") {
		t.Errorf("image evidence: %s", evidenceText(got["patch.image-age"]))
	}

	// Ubuntu, up to date, but update-notifier asks for a reboot.
	ub := &nodewardv1.Snapshot{
		Node: &nodewardv1.Node{KernelRelease: "6.8.0-1019-aws", Os: &nodewardv1.OsRelease{Id: "ubuntu", VersionId: "22.04"}},
		Packages: &nodewardv1.PackageInventory{Packages: []*nodewardv1.Package{
			debPkg("linux-image-aws", "6.8.0.1019.20", 3),
			debPkg("linux-image-6.8.0-1019-aws", "6.8.0-1019.20~22.04.1", 3),
			debPkg("libc6", "2.35-0ubuntu3.8", 2),
		}},
	}
	env := rootWith(t, map[string]string{"var/run/reboot-required": "*** System restart required ***\n", "var/run/reboot-required.pkgs": "libc6\nlibssl3\n"})
	got = byID(runPatchAge(env, ub, o))
	for id, st := range map[string]nodewardv1.FindingStatus{"patch.last-package-change": statPass, "patch.kernel-age": statPass, "patch.reboot-required": statFail, "patch.image-age": statNA} {
		if got[id].GetStatus() != st {
			t.Errorf("ubuntu %s: %v, want %v\n%s", id, got[id].GetStatus(), st, evidenceText(got[id]))
		}
	}
	if !strings.Contains(evidenceText(got["patch.reboot-required"]), "libc6, libssl3") {
		t.Errorf("reboot-required.pkgs not cited: %s", evidenceText(got["patch.reboot-required"]))
	}
	// Without the marker the same node passes.
	if f := byID(runPatchAge(rootWith(t, nil), ub, o))["patch.reboot-required"]; f.GetStatus() != statPass {
		t.Errorf("no marker: %v\n%s", f.GetStatus(), evidenceText(f))
	}

	// Bottlerocket: image-based, no packages.
	br := &nodewardv1.Snapshot{
		Node:     &nodewardv1.Node{KernelRelease: "6.1.102", Os: &nodewardv1.OsRelease{Id: "bottlerocket", VersionId: "1.34.0", VariantId: "aws-ecs-2"}},
		Packages: &nodewardv1.PackageInventory{ImageBased: true, ImageVersion: "1.34.0"},
	}
	got = byID(runPatchAge(rootWith(t, nil), br, o))
	for id, st := range map[string]nodewardv1.FindingStatus{"patch.last-package-change": statNA, "patch.kernel-age": statNA, "patch.reboot-required": statNA, "patch.image-age": statUnknown} {
		if got[id].GetStatus() != st {
			t.Errorf("bottlerocket %s: %v, want %v\n%s", id, got[id].GetStatus(), st, evidenceText(got[id]))
		}
	}

	// No facts at all: unknown, and saying why.
	for _, f := range runPatchAge(rootWith(t, nil), &nodewardv1.Snapshot{}, o) {
		if f.GetStatus() != statUnknown && f.GetStatus() != statNA {
			t.Errorf("no facts %s: %v", f.GetCheckId(), f.GetStatus())
		}
		if len(f.GetEvidence()) == 0 {
			t.Errorf("no facts %s: no evidence", f.GetCheckId())
		}
	}
}

func TestParseBuildTime(t *testing.T) {
	for _, s := range []string{"Tue Jun  4 21:57:37 UTC 2024", "Tue Jun 4 21:57:37 UTC 2024", "2024-06-04T21:57:37Z", "2024-06-04"} {
		tm, err := ParseBuildTime(s)
		if err != nil || tm.Year() != 2024 || tm.Month() != 6 || tm.Day() != 4 {
			t.Errorf("ParseBuildTime(%q) = %v, %v", s, tm, err)
		}
	}
	if _, err := ParseBuildTime("\x00garbage"); err == nil {
		t.Error("garbage parsed")
	}
}

func FuzzParseEKSRelease(f *testing.F) {
	f.Add("BUILD_TIME=\"Tue Jun  4 21:57:37 UTC 2024\"\nBASE_AMI_ID='ami-1'\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseEKSRelease(strings.NewReader(s))
		if err != nil {
			return
		}
		if bt, ok := m["BUILD_TIME"]; ok {
			_, _ = ParseBuildTime(bt)
		}
	})
}
