package posture

import (
	"context"
	"fmt"
	"strings"

	"github.com/nodeward/nodeward/agent/posture/options"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "unused-ports",
		Reads: []string{"facts: ports"},
		Run: func(_ context.Context, env *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding {
			return runUnusedPorts(facts, portOptionsFrom(postureOptions(env)))
		},
	})
}

// allowedPort is a listener a worker node is expected to expose.
type allowedPort struct {
	Protocol nodewardv1.Protocol
	Port     uint32
	// Process, when set, must match the owning process name too.
	Process string
	Why     string
}

type portOptions struct {
	Allow []allowedPort
}

func defaultPortOptions() portOptions {
	tcp, udp := nodewardv1.Protocol_PROTOCOL_TCP, nodewardv1.Protocol_PROTOCOL_UDP
	return portOptions{Allow: []allowedPort{
		{tcp, 10250, "kubelet", "kubelet API"},
		{tcp, 10256, "kube-proxy", "kube-proxy health"},
		{tcp, 10249, "kube-proxy", "kube-proxy metrics"},
		{tcp, 61678, "aws-k8s-agent", "Amazon VPC CNI metrics"},
		{tcp, 61680, "", "Amazon VPC CNI network policy agent metrics"},
		{tcp, 4240, "cilium-agent", "Cilium health"},
		{tcp, 9962, "cilium-agent", "Cilium metrics"},
		{tcp, 9963, "cilium-operator", "Cilium operator metrics"},
		{tcp, 4244, "cilium-agent", "Hubble"},
		{tcp, 9099, "calico-node", "Calico felix health"},
		{tcp, 179, "bird", "Calico BGP"},
		{tcp, 53, "node-cache", "node-local DNS"},
		{udp, 53, "node-cache", "node-local DNS"},
		{tcp, 9253, "node-cache", "node-local DNS metrics"},
		{tcp, 0, "nodeward-agent", "nodeward itself"},
	}}
}

func portOptionsFrom(p options.Posture) portOptions {
	o := defaultPortOptions()
	for _, a := range p.AllowPorts {
		proto := nodewardv1.Protocol_PROTOCOL_TCP
		if a.Protocol == "udp" {
			proto = nodewardv1.Protocol_PROTOCOL_UDP
		}
		o.Allow = append(o.Allow, allowedPort{proto, a.Number, a.Process, "on the site's allow-list"})
	}
	return o
}

func (a allowedPort) matches(p *nodewardv1.ListeningPort) bool {
	if a.Protocol != p.GetProtocol() || (a.Port != 0 && a.Port != p.GetPort()) {
		return false
	}
	// comm is cut at 15 bytes, so a 15-byte name matches a longer one.
	name := p.GetProcessName()
	return a.Process == "" || name == a.Process || len(name) == 15 && strings.HasPrefix(a.Process, name)
}

func runUnusedPorts(facts *nodewardv1.Snapshot, o portOptions) []*nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "ports.unexpected-listeners",
		Title:       "No listener beyond loopback except the node's expected services",
		Severity:    sevMedium,
		Remediation: "Stop or rebind (to 127.0.0.1) the services listed, or add them to the agent's port allow-list if they are meant to be there; restrict node security groups to what the cluster needs.",
		References:  []*nodewardv1.Reference{refEKS("Minimize access to worker nodes"), refCIS("Ensure only approved services are listening on a network interface")},
	}
	ports := facts.GetPorts()
	if ports == nil {
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd("facts: ports", "", "no port inventory was gathered")}
		return []*nodewardv1.Finding{f}
	}
	exposed, allowed := 0, 0
	for _, p := range ports.GetPorts() {
		if p.GetExposure() == nodewardv1.Exposure_EXPOSURE_LOOPBACK {
			continue
		}
		// A listener in a pod's own network namespace is not on the node's
		// addresses; hostNetwork pods share the host's.
		if p.GetNetns() != "" && !p.GetHostNetns() {
			continue
		}
		exposed++
		ok := false
		for _, a := range o.Allow {
			if a.matches(p) {
				ok = true
				break
			}
		}
		if ok {
			allowed++
			continue
		}
		f.Evidence = append(f.Evidence, evd("facts: ports", describePort(p), "exposed beyond loopback and not on the allow-list"))
	}
	if len(f.Evidence) > 0 {
		f.Status = statFail
	} else {
		f.Status = statPass
	}
	f.Evidence = append(f.Evidence, evd("facts: ports", fmt.Sprintf("%d listeners, %d beyond loopback in the host network namespace, %d allowed", len(ports.GetPorts()), exposed, allowed), "allow-list: kubelet, kube-proxy, CNI, node-local DNS, nodeward"))
	return []*nodewardv1.Finding{f}
}

func describePort(p *nodewardv1.ListeningPort) string {
	proto := strings.ToLower(strings.TrimPrefix(p.GetProtocol().String(), "PROTOCOL_"))
	addr := p.GetAddress()
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	s := fmt.Sprintf("%s %s:%d", proto, addr, p.GetPort())
	if p.GetPid() != 0 {
		s += fmt.Sprintf(" pid %d %s", p.GetPid(), p.GetProcessName())
		if p.GetExe() != "" {
			s += " (" + p.GetExe() + ")"
		}
	} else {
		s += " (owner unknown)"
	}
	if p.GetPodUid() != "" {
		s += " pod " + p.GetPodUid()
	}
	return s
}
