package posture

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/nodeward/nodeward/agent/posture/options"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "attack-surface",
		Reads: []string{"facts: packages, node"},
		Run: func(_ context.Context, env *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding {
			return runAttackSurface(facts, attackSurfaceOptionsFrom(postureOptions(env)))
		},
	})
}

// unwantedPackage is a package a worker node should not carry.
type unwantedPackage struct {
	Name, Why string
}

type attackSurfaceOptions struct {
	// Unwanted is the deny-list; users extend it.
	Unwanted []unwantedPackage
}

// defaultUnwanted: tools an intruder would bring if they were not there
// already, and clear-text remote access.
var defaultUnwanted = func() []unwantedPackage {
	var out []unwantedPackage
	add := func(why string, names ...string) {
		for _, n := range names {
			out = append(out, unwantedPackage{n, why})
		}
	}
	add("compiler", "gcc", "g++", "gcc-c++", "clang", "tcc", "gfortran", "golang", "golang-go", "rustc")
	add("debugger or tracer", "gdb", "strace", "ltrace", "lldb", "valgrind")
	add("packet capture or crafting", "tcpdump", "wireshark", "tshark", "nmap", "ncat", "nmap-ncat", "netcat", "netcat-openbsd", "netcat-traditional", "socat", "hping3", "scapy", "python3-scapy")
	add("clear-text remote access", "telnet", "telnetd", "telnet-server", "inetutils-telnet", "ftp", "tnftp", "lftp", "vsftpd", "tftp", "tftp-hpa", "tftp-server", "rsh", "rsh-client", "rsh-server", "rsh-redone-client", "rlogin", "talk", "ypbind", "xinetd")
	add("password cracking", "john", "hydra", "hashcat")
	return out
}()

func defaultAttackSurfaceOptions() attackSurfaceOptions {
	return attackSurfaceOptionsFrom(options.Default())
}

func attackSurfaceOptionsFrom(p options.Posture) attackSurfaceOptions {
	o := attackSurfaceOptions{Unwanted: slices.Clone(defaultUnwanted)}
	for _, n := range p.UnwantedPackages {
		o.Unwanted = append(o.Unwanted, unwantedPackage{n, "on the site's list"})
	}
	return o
}

// Reference package counts of lean images, from the EKS best-practices
// guidance on minimal node OSes.
var referenceCounts = []struct {
	label string
	count int
	match func(osr *nodewardv1.OsRelease, eks map[string]string) bool
}{
	{"EKS-optimized AMI 1.25", 316, func(_ *nodewardv1.OsRelease, eks map[string]string) bool { return len(eks) > 0 }},
	{"Amazon Linux 2", 453, func(o *nodewardv1.OsRelease, _ map[string]string) bool {
		return o.GetId() == "amzn" && o.GetVersionId() == "2"
	}},
	{"Ubuntu 22.04", 598, func(o *nodewardv1.OsRelease, _ map[string]string) bool {
		return o.GetId() == "ubuntu" && o.GetVersionId() == "22.04"
	}},
}

func runAttackSurface(facts *nodewardv1.Snapshot, o attackSurfaceOptions) []*nodewardv1.Finding {
	count := &nodewardv1.Finding{
		CheckId:     "attack-surface.package-count",
		Title:       "The node carries no more packages than a lean reference image",
		Severity:    sevLow,
		Remediation: "Build nodes from a minimal image (EKS-optimized AMI, Bottlerocket) and remove what the workload does not need.",
		References:  []*nodewardv1.Reference{refEKS("Use an OS optimized for running containers")},
	}
	unwanted := &nodewardv1.Finding{
		CheckId:     "attack-surface.unwanted-packages",
		Title:       "No compilers, debuggers, packet tools or clear-text remote-access clients on the node",
		Severity:    sevMedium,
		Remediation: "Remove these packages from the node image; debug with ephemeral containers or a separate debug node instead.",
		References:  []*nodewardv1.Reference{refEKS("Use an OS optimized for running containers"), refSTIG("AZLX-23-000315", "Amazon Linux 2023 must not have the telnet-server package installed")},
	}
	pk := facts.GetPackages()
	if pk == nil {
		for _, f := range []*nodewardv1.Finding{count, unwanted} {
			f.Status = statUnknown
			f.Evidence = []*nodewardv1.Evidence{evd("facts: packages", "", "no package inventory was gathered")}
		}
		return []*nodewardv1.Finding{count, unwanted}
	}
	if pk.GetImageBased() {
		for _, f := range []*nodewardv1.Finding{count, unwanted} {
			f.Status = statPass
			f.Evidence = []*nodewardv1.Evidence{evd("facts: packages", "image version "+pk.GetImageVersion(), "image-based OS: no package manager, nothing can be added to the host")}
		}
		return []*nodewardv1.Finding{count, unwanted}
	}
	installed := 0
	var names []string
	for _, p := range pk.GetPackages() {
		if p.GetGpgPubkey() || (p.GetState() != "" && p.GetState() != "installed") {
			continue
		}
		installed++
		names = append(names, p.GetName())
	}
	var refs []string
	count.Status = statNA
	for _, r := range referenceCounts {
		refs = append(refs, fmt.Sprintf("%s %d", r.label, r.count))
		if count.Status == statNA && r.match(facts.GetNode().GetOs(), facts.GetNode().GetEksRelease()) {
			count.Status = statPass
			if installed > r.count {
				count.Status = statFail
			}
			count.Evidence = append(count.Evidence, evd("reference", fmt.Sprintf("%s: %d", r.label, r.count), fmt.Sprintf("this node has %d installed, %+d against the reference", installed, installed-r.count)))
		}
	}
	count.Evidence = append([]*nodewardv1.Evidence{evd("facts: packages", fmt.Sprintf("%d installed", installed), "references: "+strings.Join(refs, ", "))}, count.Evidence...)
	if count.Status == statNA {
		count.Evidence = append(count.Evidence, evd("facts: node.os", facts.GetNode().GetOs().GetId()+" "+facts.GetNode().GetOs().GetVersionId(), "no reference count for this OS"))
	}

	byWhy := map[string][]string{}
	for _, u := range o.Unwanted {
		if slices.Contains(names, u.Name) {
			byWhy[u.Why] = append(byWhy[u.Why], u.Name)
		}
	}
	if len(byWhy) == 0 {
		unwanted.Status = statPass
		unwanted.Evidence = []*nodewardv1.Evidence{evd("facts: packages", fmt.Sprintf("%d installed", installed), fmt.Sprintf("none of the %d listed packages is installed", len(o.Unwanted)))}
		return []*nodewardv1.Finding{count, unwanted}
	}
	unwanted.Status = statFail
	whys := make([]string, 0, len(byWhy))
	for w := range byWhy {
		whys = append(whys, w)
	}
	sort.Strings(whys)
	for _, w := range whys {
		sort.Strings(byWhy[w])
		unwanted.Evidence = append(unwanted.Evidence, evd("facts: packages", strings.Join(byWhy[w], ", "), w+" installed"))
	}
	return []*nodewardv1.Finding{count, unwanted}
}
