package store

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nodeward/nodeward/collector/pkgver"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Delta is what a new latest snapshot changes for a node.
type Delta struct {
	Changes        []*nodewardv1.Change
	AddPackages    []*nodewardv1.Package
	RemovePackages []string // PackageKey values
	AddPorts       []*nodewardv1.ListeningPort
	RemovePorts    []string // PortKey values
	// Findings is the node's whole new set, each with changed_at set.
	Findings []*nodewardv1.Finding
	Posture  *nodewardv1.PostureSummary
}

// PackageKey identifies one installed package version on a node.
func PackageKey(p *nodewardv1.Package) string {
	e := ""
	if p.Epoch != nil {
		e = fmt.Sprint(p.GetEpoch())
	}
	return strings.Join([]string{p.GetManager().String(), p.GetName(), p.GetArch(), e, p.GetVersion(), p.GetRelease()}, "|")
}

// PortKey identifies one listening socket on a node.
func PortKey(p *nodewardv1.ListeningPort) string {
	return fmt.Sprintf("%s|%s|%d|%s", p.GetProtocol(), p.GetAddress(), p.GetPort(), p.GetNetns())
}

// PortSubject is how a port is named in its change history.
func PortSubject(p *nodewardv1.ListeningPort) string {
	proto := strings.ToLower(strings.TrimPrefix(p.GetProtocol().String(), "PROTOCOL_"))
	addr := p.GetAddress()
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	s := fmt.Sprintf("%s/%s:%d", proto, addr, p.GetPort())
	if !p.GetHostNetns() && p.GetNetns() != "" {
		s += " " + p.GetNetns()
	}
	return s
}

// FullVersion is a package's version as people write it: [E:]V[-R].
func FullVersion(p *nodewardv1.Package) string {
	v := p.GetVersion()
	if p.GetManager() != nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG {
		if p.GetRelease() != "" {
			v += "-" + p.GetRelease()
		}
		if p.Epoch != nil && p.GetEpoch() != 0 {
			v = fmt.Sprintf("%d:%s", p.GetEpoch(), v)
		}
	}
	return v
}

// Diff compares a node's previous latest snapshot (nil for its first) with
// the new one received at `at`. It sets each new finding's changed_at (kept
// from before when the status did not change) and the node's posture, and
// carries the old inventory over when the new snapshot lacks one (a
// source that failed or was not run is not a removal). The first snapshot
// is the baseline: it records no changes.
func Diff(old, snap *nodewardv1.Snapshot, at time.Time, seq uint64) *Delta {
	d := &Delta{}
	ts := timestamppb.New(at)
	change := func(kind nodewardv1.ChangeKind, subject, from, to string) {
		d.Changes = append(d.Changes, &nodewardv1.Change{
			NodeName: snap.GetNode().GetName(), Time: ts, Kind: kind, Subject: subject, From: from, To: to, Sequence: seq,
		})
	}

	// Packages.
	switch {
	case snap.GetPackages() == nil && old.GetPackages() != nil:
		snap.Packages = old.GetPackages()
	case snap.GetPackages() != nil:
		oldPk := map[string]*nodewardv1.Package{}
		for _, p := range old.GetPackages().GetPackages() {
			oldPk[PackageKey(p)] = p
		}
		newPk := map[string]*nodewardv1.Package{}
		for _, p := range snap.GetPackages().GetPackages() {
			newPk[PackageKey(p)] = p
		}
		// A database that could not be read lost its packages, it did not
		// remove them.
		partial := false
		for _, db := range snap.GetPackages().GetDatabases() {
			if db.GetError() != "" {
				partial = true
			}
		}
		type nameArch struct{ name, arch string }
		added := map[nameArch][]*nodewardv1.Package{}
		removed := map[nameArch][]*nodewardv1.Package{}
		for k, p := range newPk {
			if _, ok := oldPk[k]; !ok {
				d.AddPackages = append(d.AddPackages, p)
				added[nameArch{p.GetName(), p.GetArch()}] = append(added[nameArch{p.GetName(), p.GetArch()}], p)
			}
		}
		for k, p := range oldPk {
			if _, ok := newPk[k]; !ok && !partial {
				d.RemovePackages = append(d.RemovePackages, k)
				removed[nameArch{p.GetName(), p.GetArch()}] = append(removed[nameArch{p.GetName(), p.GetArch()}], p)
			}
		}
		if old != nil {
			for na, adds := range added {
				rems := removed[na]
				if len(adds) == 1 && len(rems) == 1 {
					kind := nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_UPGRADED
					if pkgver.ComparePackage(adds[0], pkgver.OfPackage(rems[0])) < 0 {
						kind = nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_DOWNGRADED
					}
					change(kind, na.name, FullVersion(rems[0]), FullVersion(adds[0]))
					delete(removed, na)
					continue
				}
				for _, p := range adds {
					change(nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_INSTALLED, na.name, "", FullVersion(p))
				}
			}
			for na, rems := range removed {
				for _, p := range rems {
					change(nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_REMOVED, na.name, FullVersion(p), "")
				}
			}
		}
	}

	// Ports.
	switch {
	case snap.GetPorts() == nil && old.GetPorts() != nil:
		snap.Ports = old.GetPorts()
	case snap.GetPorts() != nil:
		oldPt := map[string]*nodewardv1.ListeningPort{}
		for _, p := range old.GetPorts().GetPorts() {
			oldPt[PortKey(p)] = p
		}
		newPt := map[string]*nodewardv1.ListeningPort{}
		for _, p := range snap.GetPorts().GetPorts() {
			newPt[PortKey(p)] = p
		}
		for k, p := range newPt {
			if _, ok := oldPt[k]; !ok {
				d.AddPorts = append(d.AddPorts, p)
				if old != nil {
					change(nodewardv1.ChangeKind_CHANGE_KIND_PORT_OPENED, PortSubject(p), "", p.GetProcessName())
				}
			}
		}
		for k, p := range oldPt {
			if _, ok := newPt[k]; !ok {
				d.RemovePorts = append(d.RemovePorts, k)
				if old != nil {
					change(nodewardv1.ChangeKind_CHANGE_KIND_PORT_CLOSED, PortSubject(p), p.GetProcessName(), "")
				}
			}
		}
	}

	// Findings.
	oldF := map[string]*nodewardv1.Finding{}
	for _, f := range old.GetFindings() {
		oldF[f.GetCheckId()] = f
	}
	for _, f := range snap.GetFindings() {
		f.NodeName = snap.GetNode().GetName()
		prev, ok := oldF[f.GetCheckId()]
		switch {
		case ok && prev.GetStatus() == f.GetStatus() && prev.GetChangedAt() != nil:
			f.ChangedAt = prev.GetChangedAt()
		default:
			f.ChangedAt = ts
			if old != nil {
				from := ""
				if ok {
					from = StatusName(prev.GetStatus())
				}
				change(nodewardv1.ChangeKind_CHANGE_KIND_FINDING_CHANGED, f.GetCheckId(), from, StatusName(f.GetStatus()))
			}
		}
		d.Findings = append(d.Findings, f)
	}
	d.Posture = Posture(snap.GetFindings())
	if snap.GetNode() != nil {
		snap.Node.Posture = d.Posture
	}
	sort.Slice(d.Changes, func(i, j int) bool {
		if d.Changes[i].GetKind() != d.Changes[j].GetKind() {
			return d.Changes[i].GetKind() < d.Changes[j].GetKind()
		}
		return d.Changes[i].GetSubject() < d.Changes[j].GetSubject()
	})
	return d
}

// StatusName is a finding status as people read it: "pass", "fail"...
func StatusName(s nodewardv1.FindingStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "FINDING_STATUS_"))
}

// severityWeight is how much a check of each severity counts in the score.
var severityWeight = map[nodewardv1.Severity]uint32{
	nodewardv1.Severity_SEVERITY_CRITICAL: 10,
	nodewardv1.Severity_SEVERITY_HIGH:     5,
	nodewardv1.Severity_SEVERITY_MEDIUM:   3,
	nodewardv1.Severity_SEVERITY_LOW:      1,
	nodewardv1.Severity_SEVERITY_INFO:     0,
}

// Posture summarises a node's latest findings. The score is
//
//	score = round(100 × Σ weight(passing) / Σ weight(passing or failing))
//
// with weights critical 10, high 5, medium 3, low 1, info 0: a failing
// critical check costs ten times a failing low one, and informational
// checks never move it. Unknown, error and not-applicable findings are not
// decided and do not count (they are reported beside the score instead),
// so a node is never scored on what could not be read. With no weighted
// decided finding the score is 100 when something was decided, else 0 and
// decided says 0.
func Posture(findings []*nodewardv1.Finding) *nodewardv1.PostureSummary {
	p := &nodewardv1.PostureSummary{}
	var pass, total uint32
	for _, f := range findings {
		w := severityWeight[f.GetSeverity()]
		switch f.GetStatus() {
		case nodewardv1.FindingStatus_FINDING_STATUS_PASS:
			p.Decided++
			pass += w
			total += w
		case nodewardv1.FindingStatus_FINDING_STATUS_FAIL:
			p.Decided++
			total += w
			switch f.GetSeverity() {
			case nodewardv1.Severity_SEVERITY_CRITICAL:
				p.FailingCritical++
			case nodewardv1.Severity_SEVERITY_HIGH:
				p.FailingHigh++
			case nodewardv1.Severity_SEVERITY_MEDIUM:
				p.FailingMedium++
			case nodewardv1.Severity_SEVERITY_LOW:
				p.FailingLow++
			default:
				p.FailingInfo++
			}
		case nodewardv1.FindingStatus_FINDING_STATUS_UNKNOWN:
			p.Unknown++
		case nodewardv1.FindingStatus_FINDING_STATUS_ERROR:
			p.Errors++
		}
	}
	switch {
	case total > 0:
		p.Score = (100*pass + total/2) / total
	case p.Decided > 0:
		p.Score = 100
	}
	return p
}
