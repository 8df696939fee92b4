package posture

import (
	"context"

	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "ssm-agent",
		Reads: []string{"/usr/bin/amazon-ssm-agent", "/snap/amazon-ssm-agent", "systemd: amazon-ssm-agent.service", "/proc/*/comm", "facts: packages"},
		Run:   runSSM,
	})
}

var ssmUnits = []string{"amazon-ssm-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service"}

var ssmBinaries = []string{"/usr/bin/amazon-ssm-agent", "/usr/sbin/amazon-ssm-agent", "/snap/amazon-ssm-agent/current/amazon-ssm-agent"}

func runSSM(ctx context.Context, env *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "ssm.agent",
		Title:       "The SSM agent is installed and running (the access path that replaces SSH)",
		Severity:    sevLow,
		Remediation: "Install and enable amazon-ssm-agent (present on EKS-optimized AMIs; on Bottlerocket it runs in the control container) and attach AmazonSSMManagedInstanceCore to the node role.",
		References:  []*nodewardv1.Reference{refEKS("Minimize access to worker nodes")},
	}
	s := readService(ctx, env, ssmUnits, []string{"amazon-ssm-agent"})
	f.Evidence = s.evidence
	for _, b := range ssmBinaries {
		if ok, _ := env.Root.Exists(b); ok {
			s.installed = true
			f.Evidence = append(f.Evidence, evd(b, "present", "the SSM agent binary is installed"))
			break
		}
	}
	for _, p := range facts.GetPackages().GetPackages() {
		if p.GetName() == "amazon-ssm-agent" {
			s.installed = true
			f.Evidence = append(f.Evidence, evd("facts: packages", p.GetName()+" "+pkgVersion(p), "the SSM agent package is installed"))
		}
	}
	bottlerocket := facts.GetNode().GetOs().GetId() == "bottlerocket"
	switch {
	case s.running:
		f.Status = statPass
	case bottlerocket && !s.runningKnown:
		f.Status = statUnknown
		f.Evidence = append(f.Evidence, evd("facts: node.os", "bottlerocket", "the SSM agent runs in Bottlerocket's control container; whether it runs cannot be told without the host's /proc"))
	case !s.installed && !bottlerocket:
		f.Status = statFail
		f.Evidence = append(f.Evidence, evd("decision", "", "the SSM agent is not installed"))
	case s.runningKnown:
		f.Status = statFail
		f.Evidence = append(f.Evidence, evd("decision", "", "the SSM agent is not running"))
	default:
		f.Status = statUnknown
		f.Evidence = append(f.Evidence, evd("decision", "", "the SSM agent is installed; whether it runs cannot be told without systemd or the host's /proc"))
	}
	return []*nodewardv1.Finding{f}
}
