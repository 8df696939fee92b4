package posture

import (
	"context"
	"fmt"
	"strings"

	"github.com/nodeward/nodeward/agent/posture/systemd"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "sshd-service",
		Reads: []string{"/usr/sbin/sshd", systemd.SystemBusPath, "/etc/systemd/system", "/proc/*/comm", "facts: packages, ports"},
		Run:   runSSHDService,
	})
}

// sshUnits are the unit names distributions give sshd: Debian and Ubuntu
// ssh.*, Amazon Linux, RHEL and SUSE sshd.*.
var sshUnits = []string{"ssh.service", "sshd.service", "ssh.socket", "sshd.socket"}

var sshdBinaries = []string{"/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"}

func runSSHDService(ctx context.Context, env *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "ssh.service-enabled",
		Title:       "sshd is not installed, or is stopped and disabled (reach nodes through SSM instead)",
		Severity:    sevMedium,
		Remediation: "Remove openssh-server from the node image, or `systemctl disable --now ssh.service ssh.socket` (sshd.service on Amazon Linux) and `systemctl mask` them; use AWS Systems Manager Session Manager for break-glass access.",
		References: []*nodewardv1.Reference{
			refEKS("Minimize access to worker nodes"),
			refCIS("Ensure sshd access is configured (or sshd is not installed)"),
		},
	}
	s := sshdState(ctx, env, facts)
	f.Evidence = s.evidence
	switch {
	case s.running || s.enabled:
		f.Status = statFail
	case !s.installed:
		f.Status = statPass
	case s.activeKnown:
		f.Status = statPass
	default:
		f.Status = statUnknown
	}
	f.Evidence = append(f.Evidence, evd("decision", strings.ToLower(strings.TrimPrefix(f.Status.String(), "FINDING_STATUS_")), s.decision()))
	return []*nodewardv1.Finding{f}
}

// sshdFacts is what was learnt about sshd on the host.
type sshdFacts struct {
	installed, running, enabled bool
	// activeKnown: whether running is an answer (D-Bus or a host /proc scan)
	// rather than a default.
	activeKnown bool
	units       []systemd.Unit
	evidence    []*nodewardv1.Evidence
}

func (s *sshdFacts) decision() string {
	switch {
	case s.running && s.enabled:
		return "sshd runs and starts at boot"
	case s.running:
		return "sshd runs"
	case s.enabled:
		return "sshd starts at boot"
	case !s.installed:
		return "no sshd binary, configuration, package or unit on the host"
	case s.activeKnown:
		return "sshd is installed but neither runs nor is enabled"
	}
	return "sshd is installed and not enabled, but whether it runs cannot be told without systemd or the host's /proc"
}

func sshdState(ctx context.Context, env *source.Env, facts *nodewardv1.Snapshot) *sshdFacts {
	s := &sshdFacts{}
	for _, b := range sshdBinaries {
		ok, err := env.Root.Exists(b)
		if err != nil {
			s.evidence = append(s.evidence, evd(b, "", "cannot tell: "+err.Error()))
			continue
		}
		if ok {
			s.installed = true
			s.evidence = append(s.evidence, evd(b, "present", "the sshd binary is installed"))
			break
		}
	}
	// A package's configuration left on disk says it is (or was) installed.
	if ok, err := env.Root.Exists("/etc/ssh/sshd_config"); err == nil && ok {
		s.installed = true
		s.evidence = append(s.evidence, evd("/etc/ssh/sshd_config", "present", "sshd is configured on the host"))
	}
	for _, p := range facts.GetPackages().GetPackages() {
		if p.GetName() == "openssh-server" || p.GetName() == "openssh" && p.GetManager() == nodewardv1.PackageManager_PACKAGE_MANAGER_APK {
			s.installed = true
			s.evidence = append(s.evidence, evd("package inventory", p.GetName()+" "+p.GetVersion(), "the sshd package is installed"))
		}
	}

	units, busErr, err := systemd.State(ctx, env.Root, sshUnits)
	if busErr != nil {
		s.evidence = append(s.evidence, evd(systemd.SystemBusPath, "", "systemd not reachable over D-Bus ("+busErr.Error()+"); unit state read from unit files, running state from processes"))
	}
	if err != nil {
		s.evidence = append(s.evidence, evd("/etc/systemd/system", "", "unit files: "+err.Error()))
	}
	s.units = units
	for _, u := range units {
		if !u.Exists() {
			continue
		}
		s.installed = true
		reason := "unit known to systemd"
		if u.Active() {
			s.running = true
			reason = "unit is active"
		}
		if u.Enabled() {
			s.enabled = true
			reason += ", enabled at boot"
		}
		if u.Masked() {
			reason = "unit is masked"
		}
		s.evidence = append(s.evidence, evd("systemd "+u.Via+": "+u.Name, u.String(), reason))
	}
	if busErr == nil {
		s.activeKnown = true
	} else {
		procs, err := findProcs(env.Proc, "sshd")
		if err != nil {
			s.evidence = append(s.evidence, evd(env.Proc, "", "process scan: "+err.Error()))
		} else {
			s.activeKnown = hostProcMounted(env.Proc)
			for _, p := range procs {
				s.running, s.installed = true, true
				s.evidence = append(s.evidence, evd(env.Proc, p.String(), "an sshd process runs"))
			}
		}
	}
	var listening []string
	for _, p := range facts.GetPorts().GetPorts() {
		if strings.HasPrefix(p.GetProcessName(), "sshd") {
			listening = append(listening, fmt.Sprintf("%s %s:%d (%s)", strings.TrimPrefix(p.GetProtocol().String(), "PROTOCOL_"), p.GetAddress(), p.GetPort(), strings.ToLower(strings.TrimPrefix(p.GetExposure().String(), "EXPOSURE_"))))
		}
	}
	if len(listening) > 0 {
		s.running = true
		s.evidence = append(s.evidence, evd("port inventory", strings.Join(listening, ", "), "sshd listens"))
	}
	return s
}

// hostProcMounted reports whether procDir looks like a live procfs (it has
// a self link): only then does "no sshd process" mean sshd is not running.
func hostProcMounted(procDir string) bool {
	_, err := readBounded(procDir+"/self/stat", 64)
	return err == nil
}
