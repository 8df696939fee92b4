package posture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/nodeward/nodeward/agent/posture/options"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "patch-age",
		Reads: []string{"facts: packages, node", rebootRequiredPath, eksReleasePath},
		Run: func(_ context.Context, env *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding {
			return runPatchAge(env, facts, patchOptionsFrom(postureOptions(env), time.Now()))
		},
	})
}

const (
	rebootRequiredPath = "/var/run/reboot-required"
	eksReleasePath     = "/etc/eks/release"
)

// patchOptions are the patch-age thresholds, in days.
type patchOptions struct {
	WarnDays, FailDays int
	Now                time.Time
}

func patchOptionsFrom(p options.Posture, now time.Time) patchOptions {
	return patchOptions{WarnDays: p.PatchWarnDays, FailDays: p.PatchFailDays, Now: now}
}

// ageStatus judges an age against the thresholds: past FailDays fails
// medium, past WarnDays fails low, else passes.
func (o patchOptions) ageStatus(t time.Time) (nodewardv1.FindingStatus, nodewardv1.Severity, int) {
	days := int(o.Now.Sub(t).Hours() / 24)
	switch {
	case days >= o.FailDays:
		return statFail, sevMedium, days
	case days >= o.WarnDays:
		return statFail, sevLow, days
	}
	return statPass, sevMedium, days
}

func (o patchOptions) thresholds() string {
	return fmt.Sprintf("warn at %d days, fail at %d", o.WarnDays, o.FailDays)
}

var patchRefs = []*nodewardv1.Reference{
	refEKS("Keep your infrastructure OS up to date"),
	refEKS("Treat your infrastructure as immutable and automate the replacement of your worker nodes"),
	refCIS("Ensure updates, patches, and additional security software are installed"),
}

func runPatchAge(env *source.Env, facts *nodewardv1.Snapshot, o patchOptions) []*nodewardv1.Finding {
	pk := facts.GetPackages()
	osr := facts.GetNode().GetOs()
	kernels := kernelPackages(pk.GetPackages())
	out := []*nodewardv1.Finding{
		lastPackageChange(pk, o),
		kernelAge(facts.GetNode().GetKernelRelease(), pk, kernels, o),
		rebootRequired(env, facts.GetNode().GetKernelRelease(), pk, kernels),
		imageAge(env, facts, osr, o),
	}
	return out
}

func lastPackageChange(pk *nodewardv1.PackageInventory, o patchOptions) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "patch.last-package-change",
		Title:       "Packages were updated recently",
		Severity:    sevMedium,
		Remediation: "Patch the node image regularly and roll the node group onto it (EKS managed node group update, Karpenter drift), rather than patching nodes in place.",
		References:  patchRefs,
	}
	if pk == nil {
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd("facts: packages", "", "no package inventory was gathered")}
		return f
	}
	if pk.GetImageBased() {
		f.Status = statNA
		f.Evidence = []*nodewardv1.Evidence{evd("facts: packages", "image version "+pk.GetImageVersion(), "image-based OS: no packages change on the node; see patch.image-age")}
		return f
	}
	var newest *nodewardv1.Package
	for _, p := range pk.GetPackages() {
		if p.GetGpgPubkey() || p.GetInstallTime() == nil {
			continue
		}
		if newest == nil || p.GetInstallTime().AsTime().After(newest.GetInstallTime().AsTime()) {
			newest = p
		}
	}
	if newest == nil {
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd("facts: packages", fmt.Sprintf("%d packages", len(pk.GetPackages())), "no package has an install time")}
		return f
	}
	t := newest.GetInstallTime().AsTime()
	st, sev, days := o.ageStatus(t)
	f.Status, f.Severity = st, sev
	f.Evidence = []*nodewardv1.Evidence{evd("facts: packages ("+strings.ToLower(strings.TrimPrefix(newest.GetInstallTimeSource().String(), "INSTALL_TIME_SOURCE_"))+")",
		fmt.Sprintf("%s %s installed %s", newest.GetName(), pkgVersion(newest), t.UTC().Format(time.RFC3339)),
		fmt.Sprintf("newest package change was %d days ago (%s)", days, o.thresholds()))}
	return f
}

func pkgVersion(p *nodewardv1.Package) string {
	if p.GetRelease() != "" {
		return p.GetVersion() + "-" + p.GetRelease()
	}
	return p.GetVersion()
}

// kernelPkg is an installed kernel package and the uname release it
// provides.
type kernelPkg struct {
	pkg     *nodewardv1.Package
	release []string
}

// kernelPackages finds the installed kernels: dpkg linux-image-RELEASE,
// rpm kernel / kernel-core / kernel-default (RELEASE = version-release.arch).
func kernelPackages(pkgs []*nodewardv1.Package) []kernelPkg {
	var out []kernelPkg
	for _, p := range pkgs {
		if p.GetState() != "" && p.GetState() != "installed" {
			continue
		}
		n := p.GetName()
		switch {
		case strings.HasPrefix(n, "linux-image-"):
			rel := strings.TrimPrefix(strings.TrimPrefix(n, "linux-image-"), "unsigned-")
			if rel == "" || rel[0] < '0' || rel[0] > '9' {
				continue // a metapackage such as linux-image-aws
			}
			out = append(out, kernelPkg{p, []string{rel}})
		case n == "kernel" || n == "kernel-core" || n == "kernel-default" || n == "kernel-lts":
			vr := p.GetVersion() + "-" + p.GetRelease()
			rels := []string{vr + "." + p.GetArch(), vr}
			if flavor, ok := strings.CutPrefix(n, "kernel-"); ok && flavor != "core" {
				// SUSE: 5.14.21-150500.55.49.1 provides 5.14.21-150500.55.49-default.
				if i := strings.LastIndex(vr, "."); i > 0 {
					rels = append(rels, vr[:i]+"-"+flavor)
				}
			}
			out = append(out, kernelPkg{p, rels})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].pkg.GetInstallTime().AsTime().Before(out[j].pkg.GetInstallTime().AsTime())
	})
	return out
}

func (k kernelPkg) provides(release string) bool {
	for _, r := range k.release {
		if r == release {
			return true
		}
	}
	return false
}

func kernelAge(running string, pk *nodewardv1.PackageInventory, kernels []kernelPkg, o patchOptions) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "patch.kernel-age",
		Title:       "The running kernel's package is recent",
		Severity:    sevMedium,
		Remediation: "Move the node group to an image with a current kernel (or install it and reboot).",
		References:  patchRefs,
	}
	runEv := evd("uname(2)", running, "the running kernel")
	switch {
	case running == "":
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd("facts: node", "", "the running kernel release is not known")}
		return f
	case pk == nil:
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{runEv, evd("facts: packages", "", "no package inventory was gathered")}
		return f
	case pk.GetImageBased():
		f.Status = statNA
		f.Evidence = []*nodewardv1.Evidence{runEv, evd("facts: packages", "", "image-based OS: the kernel comes with the image; see patch.image-age")}
		return f
	}
	for _, k := range kernels {
		if !k.provides(running) {
			continue
		}
		if k.pkg.GetInstallTime() == nil {
			break
		}
		t := k.pkg.GetInstallTime().AsTime()
		st, sev, days := o.ageStatus(t)
		f.Status, f.Severity = st, sev
		f.Evidence = []*nodewardv1.Evidence{runEv, evd("facts: packages", fmt.Sprintf("%s %s installed %s", k.pkg.GetName(), pkgVersion(k.pkg), t.UTC().Format(time.RFC3339)),
			fmt.Sprintf("the running kernel's package was installed %d days ago (%s)", days, o.thresholds()))}
		return f
	}
	f.Status = statUnknown
	f.Evidence = []*nodewardv1.Evidence{runEv, evd("facts: packages", kernelList(kernels), "no installed kernel package (with an install time) provides the running kernel")}
	return f
}

func kernelList(ks []kernelPkg) string {
	if len(ks) == 0 {
		return "no kernel packages"
	}
	var parts []string
	for _, k := range ks {
		parts = append(parts, k.pkg.GetName()+" "+pkgVersion(k.pkg))
	}
	return strings.Join(parts, ", ")
}

func rebootRequired(env *source.Env, running string, pk *nodewardv1.PackageInventory, kernels []kernelPkg) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "patch.reboot-required",
		Title:       "The node runs the newest installed kernel and needs no reboot",
		Severity:    sevMedium,
		Remediation: "Reboot the node (or better, replace it) so that the installed updates take effect.",
		References:  patchRefs,
	}
	decided := false
	// Ubuntu's update-notifier marks pending reboots in a file.
	b, err := env.Root.ReadFile(rebootRequiredPath, smallFile)
	switch {
	case err == nil:
		pkgs, _ := env.Root.ReadFile(rebootRequiredPath+".pkgs", smallFile)
		f.Status = statFail
		f.Evidence = append(f.Evidence, evd(rebootRequiredPath, truncate(strings.TrimSpace(string(b)), 200),
			"a package asked for a reboot: "+truncate(strings.Join(strings.Fields(string(pkgs)), ", "), 400)))
		decided = true
	case errors.Is(err, fs.ErrNotExist):
		f.Evidence = append(f.Evidence, evd(rebootRequiredPath, "", "not present: no package asked for a reboot"))
	default:
		f.Evidence = append(f.Evidence, evd(rebootRequiredPath, "", "cannot tell: "+err.Error()))
	}
	switch {
	case running == "" || pk == nil:
		f.Evidence = append(f.Evidence, evd("facts", "", "running kernel or package inventory missing: cannot compare kernels"))
	case pk.GetImageBased():
		f.Evidence = append(f.Evidence, evd("facts: packages", "", "image-based OS: kernels come with the image"))
	case len(kernels) == 0:
		f.Evidence = append(f.Evidence, evd("facts: packages", "", "no kernel package installed (a container image, or a kernel not from the package manager)"))
	default:
		newest := kernels[len(kernels)-1]
		if newest.provides(running) {
			f.Evidence = append(f.Evidence, evd("uname(2) vs facts: packages", running, "the running kernel is the newest installed ("+kernelList(kernels)+")"))
			if !decided {
				f.Status, decided = statPass, true
			}
		} else {
			known := false
			for _, k := range kernels {
				known = known || k.provides(running)
			}
			if known {
				f.Status, decided = statFail, true
				f.Evidence = append(f.Evidence, evd("uname(2) vs facts: packages", running,
					fmt.Sprintf("a newer kernel is installed: %s %s", newest.pkg.GetName(), pkgVersion(newest.pkg))))
			} else {
				f.Evidence = append(f.Evidence, evd("uname(2) vs facts: packages", running, "the running kernel matches no installed kernel package ("+kernelList(kernels)+")"))
			}
		}
	}
	if !decided {
		f.Status = statUnknown
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			if pk.GetImageBased() {
				f.Status = statNA
			}
		}
	}
	return f
}

// ParseEKSRelease reads /etc/eks/release: shell-style KEY="value" lines.
func ParseEKSRelease(r io.Reader) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		m[strings.TrimSpace(k)] = v
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("parse %s: %w", eksReleasePath, err)
	}
	return m, nil
}

// buildTimeLayouts are the ways EKS AMI builds have written BUILD_TIME.
var buildTimeLayouts = []string{time.UnixDate, "Mon Jan _2 15:04:05 MST 2006", time.RFC3339, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"}

// ParseBuildTime parses an EKS AMI BUILD_TIME.
func ParseBuildTime(s string) (time.Time, error) {
	s = strings.Join(strings.Fields(s), " ")
	for _, l := range buildTimeLayouts {
		if t, err := time.Parse(strings.Join(strings.Fields(l), " "), s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("BUILD_TIME %q: not a date this agent knows", truncate(s, 60))
}

func imageAge(env *source.Env, facts *nodewardv1.Snapshot, osr *nodewardv1.OsRelease, o patchOptions) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "patch.image-age",
		Title:       "The node's machine image is recent",
		Severity:    sevMedium,
		Remediation: "Roll the node group onto the latest EKS-optimized AMI (or Bottlerocket release); nodes should be replaced, not patched.",
		References:  patchRefs,
	}
	rel := facts.GetNode().GetEksRelease()
	src := "facts: node.eks_release"
	if len(rel) == 0 {
		src = eksReleasePath
		b, err := env.Root.ReadFile(eksReleasePath, smallFile)
		switch {
		case err == nil:
			rel, err = ParseEKSRelease(strings.NewReader(string(b)))
			if err != nil {
				f.Status = statError
				f.Evidence = []*nodewardv1.Evidence{evd(eksReleasePath, "", err.Error())}
				return f
			}
		case !errors.Is(err, fs.ErrNotExist):
			f.Status = statError
			f.Evidence = []*nodewardv1.Evidence{evd(eksReleasePath, "", err.Error())}
			return f
		}
	}
	if bt, ok := rel["BUILD_TIME"]; ok {
		t, err := ParseBuildTime(bt)
		if err != nil {
			f.Status = statUnknown
			f.Evidence = []*nodewardv1.Evidence{evd(src, truncate(bt, 60), err.Error())}
			return f
		}
		st, sev, days := o.ageStatus(t)
		f.Status, f.Severity = st, sev
		f.Evidence = []*nodewardv1.Evidence{evd(src, fmt.Sprintf("BUILD_TIME=%s BASE_AMI_ID=%s AMI_NAME=%s", bt, rel["BASE_AMI_ID"], rel["AMI_NAME"]),
			fmt.Sprintf("the EKS AMI was built %d days ago (%s)", days, o.thresholds()))}
		return f
	}
	if len(rel) > 0 {
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd(src, fmt.Sprintf("%d fields", len(rel)), "no BUILD_TIME in the EKS release file")}
		return f
	}
	if osr.GetId() == "bottlerocket" {
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd("os-release", fmt.Sprintf("VERSION_ID=%s BUILD_ID=%s VARIANT_ID=%s", osr.GetVersionId(), osr.GetBuildId(), osr.GetVariantId()),
			"Bottlerocket image version; its build date is not recorded on the host, compare it with the latest release")}
		return f
	}
	f.Status = statNA
	f.Evidence = []*nodewardv1.Evidence{evd(eksReleasePath, "", "not present: not an EKS-optimized AMI nor Bottlerocket")}
	return f
}
