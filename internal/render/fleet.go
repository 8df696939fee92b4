package render

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/term"
)

// Colour reports whether w is a terminal that wants colour: never for
// pipes and files, never with NO_COLOR set.
func Colour(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}

const (
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// paint wraps s in an ANSI colour when on is set. tabwriter counts the
// escape bytes as width, so coloured cells go last on their line or are
// padded by the caller.
func paint(on bool, colour, s string) string {
	if !on || colour == "" {
		return s
	}
	return colour + s + reset
}

// SeverityName is a severity as people read it: "high".
func SeverityName(s nodewardv1.Severity) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_"))
}

// StatusName is a finding status as people read it: "fail".
func StatusName(s nodewardv1.FindingStatus) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), "FINDING_STATUS_")), "_", "-")
}

func statusColour(s nodewardv1.FindingStatus) string {
	switch s {
	case nodewardv1.FindingStatus_FINDING_STATUS_FAIL:
		return red
	case nodewardv1.FindingStatus_FINDING_STATUS_PASS:
		return green
	case nodewardv1.FindingStatus_FINDING_STATUS_UNKNOWN, nodewardv1.FindingStatus_FINDING_STATUS_ERROR:
		return yellow
	}
	return ""
}

// Score prints a posture summary in a few characters: "83" or "-" when
// nothing was decided.
func Score(p *nodewardv1.PostureSummary) string {
	if p.GetDecided() == 0 {
		return "-"
	}
	return fmt.Sprint(p.GetScore())
}

// Failing prints failing counts by severity: "1C 2H 0M" style, only the
// non-zero ones, or "none".
func Failing(p *nodewardv1.PostureSummary) string {
	var parts []string
	for _, c := range []struct {
		n uint32
		s string
	}{{p.GetFailingCritical(), "crit"}, {p.GetFailingHigh(), "high"}, {p.GetFailingMedium(), "med"}, {p.GetFailingLow(), "low"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.s))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// SortFindings orders findings failing first, then by severity (highest
// first), then by check id.
func SortFindings(fs []*nodewardv1.Finding) {
	rank := func(s nodewardv1.FindingStatus) int {
		switch s {
		case nodewardv1.FindingStatus_FINDING_STATUS_FAIL:
			return 0
		case nodewardv1.FindingStatus_FINDING_STATUS_ERROR:
			return 1
		case nodewardv1.FindingStatus_FINDING_STATUS_UNKNOWN:
			return 2
		case nodewardv1.FindingStatus_FINDING_STATUS_PASS:
			return 3
		}
		return 4
	}
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if rank(a.GetStatus()) != rank(b.GetStatus()) {
			return rank(a.GetStatus()) < rank(b.GetStatus())
		}
		if a.GetSeverity() != b.GetSeverity() {
			return a.GetSeverity() > b.GetSeverity()
		}
		if a.GetCheckId() != b.GetCheckId() {
			return a.GetCheckId() < b.GetCheckId()
		}
		return a.GetNodeName() < b.GetNodeName()
	})
}

// Findings prints findings, failing first; withNode adds the node column
// (fleet-wide answers).
func Findings(w io.Writer, fs []*nodewardv1.Finding, withNode bool, now time.Time) error {
	if len(fs) == 0 {
		_, err := fmt.Fprintln(w, "No findings match.")
		return err
	}
	fs = append([]*nodewardv1.Finding(nil), fs...)
	SortFindings(fs)
	col := Colour(w)
	tw := newTab(w)
	if withNode {
		fmt.Fprint(tw, "NODE\t")
	}
	fmt.Fprintln(tw, "STATUS\tSEVERITY\tCHECK\tSINCE\tTITLE")
	for _, f := range fs {
		if withNode {
			fmt.Fprintf(tw, "%s\t", Truncate(f.GetNodeName(), 40))
		}
		st := StatusName(f.GetStatus())
		// Pad before colouring so the escape bytes do not skew columns.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", paint(col, statusColour(f.GetStatus()), fmt.Sprintf("%-7s", st)), SeverityName(f.GetSeverity()),
			Truncate(f.GetCheckId(), 40), since(f.GetChangedAt().AsTime(), f.GetChangedAt() != nil, now), Truncate(f.GetTitle(), 60))
	}
	return tw.Flush()
}

func since(t time.Time, ok bool, now time.Time) string {
	if !ok {
		return "-"
	}
	return Ago(t, now)
}

// FullVersion is a package version as people write it: [E:]V[-R].
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

// NodePackages prints packages found fleet-wide.
func NodePackages(w io.Writer, ps []*nodewardv1.NodePackage, now time.Time) error {
	if len(ps) == 0 {
		_, err := fmt.Fprintln(w, "No packages match.")
		return err
	}
	tw := newTab(w)
	fmt.Fprintln(tw, "NODE\tPACKAGE\tVERSION\tARCH\tMANAGER\tSTATE\tFIRST SEEN")
	for _, p := range ps {
		pk := p.GetPackage()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", Truncate(p.GetNodeName(), 40), Truncate(pk.GetName(), 32), Truncate(FullVersion(pk), 36),
			pk.GetArch(), manager(pk.GetManager()), pk.GetState(), since(p.GetFirstSeen().AsTime(), p.GetFirstSeen() != nil, now))
	}
	return tw.Flush()
}

func manager(m nodewardv1.PackageManager) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "PACKAGE_MANAGER_"))
}

func exposure(e nodewardv1.Exposure) string {
	return strings.ToLower(strings.TrimPrefix(e.String(), "EXPOSURE_"))
}

func protocol(p nodewardv1.Protocol) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PROTOCOL_"))
}

// NodePorts prints listening ports found fleet-wide.
func NodePorts(w io.Writer, ps []*nodewardv1.NodePort, now time.Time) error {
	if len(ps) == 0 {
		_, err := fmt.Fprintln(w, "No listening ports match.")
		return err
	}
	tw := newTab(w)
	fmt.Fprintln(tw, "NODE\tPROTO\tADDRESS\tPORT\tEXPOSURE\tPROCESS\tPID\tNETNS\tFIRST SEEN")
	for _, np := range ps {
		p := np.GetPort()
		netns := "host"
		if !p.GetHostNetns() {
			netns = p.GetNetns()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n", Truncate(np.GetNodeName(), 40), protocol(p.GetProtocol()), p.GetAddress(), p.GetPort(),
			exposure(p.GetExposure()), Truncate(p.GetProcessName(), 20), p.GetPid(), netns, since(np.GetFirstSeen().AsTime(), np.GetFirstSeen() != nil, now))
	}
	return tw.Flush()
}

// ChangeName is a change kind as people read it: "package upgraded".
func ChangeName(k nodewardv1.ChangeKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "CHANGE_KIND_")), "_", " ")
}

// Changes prints change history, newest first.
func Changes(w io.Writer, cs []*nodewardv1.Change, withNode bool, now time.Time) error {
	if len(cs) == 0 {
		_, err := fmt.Fprintln(w, "No changes recorded.")
		return err
	}
	tw := newTab(w)
	if withNode {
		fmt.Fprint(tw, "NODE\t")
	}
	fmt.Fprintln(tw, "WHEN\tCHANGE\tSUBJECT\tFROM\tTO")
	for _, c := range cs {
		if withNode {
			fmt.Fprintf(tw, "%s\t", Truncate(c.GetNodeName(), 40))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.GetTime().AsTime().UTC().Format("2006-01-02 15:04:05"), ChangeName(c.GetKind()),
			Truncate(c.GetSubject(), 40), dash(Truncate(c.GetFrom(), 36)), dash(Truncate(c.GetTo(), 36)))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// NodeDetail prints everything the collector knows of one node: identity,
// posture with failing findings first, listening ports, packages and
// recent changes.
func NodeDetail(w io.Writer, n *nodewardv1.Node, snap *nodewardv1.Snapshot, changes []*nodewardv1.Change, now time.Time) error {
	if err := Node(w, n, snap, now); err != nil {
		return err
	}
	if snap == nil {
		return nil
	}
	if ports := snap.GetPorts().GetPorts(); len(ports) > 0 {
		fmt.Fprintf(w, "\nListening ports (%d)\n", len(ports))
		ps := append([]*nodewardv1.ListeningPort(nil), ports...)
		sort.Slice(ps, func(i, j int) bool {
			if ps[i].GetPort() != ps[j].GetPort() {
				return ps[i].GetPort() < ps[j].GetPort()
			}
			return ps[i].GetAddress() < ps[j].GetAddress()
		})
		tw := newTab(w)
		fmt.Fprintln(tw, "  PROTO\tADDRESS\tPORT\tEXPOSURE\tPROCESS\tPID\tNETNS")
		for _, p := range ps {
			netns := "host"
			if !p.GetHostNetns() {
				netns = p.GetNetns()
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%d\t%s\n", protocol(p.GetProtocol()), p.GetAddress(), p.GetPort(), exposure(p.GetExposure()),
				Truncate(p.GetProcessName(), 20), p.GetPid(), netns)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if inv := snap.GetPackages(); inv != nil {
		pk := inv.GetPackages()
		switch {
		case inv.GetImageBased():
			fmt.Fprintf(w, "\nPackages: none (image-based OS, image %s)\n", inv.GetImageVersion())
		default:
			fmt.Fprintf(w, "\nPackages (%d, %d installed)\n", len(pk), inv.GetInstalledCount())
			ps := append([]*nodewardv1.Package(nil), pk...)
			sort.Slice(ps, func(i, j int) bool { return ps[i].GetName() < ps[j].GetName() })
			tw := newTab(w)
			fmt.Fprintln(tw, "  NAME\tVERSION\tARCH\tSTATE\tINSTALLED")
			for _, p := range ps {
				inst := "-"
				if p.GetInstallTime() != nil {
					inst = p.GetInstallTime().AsTime().UTC().Format("2006-01-02")
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", Truncate(p.GetName(), 40), Truncate(FullVersion(p), 40), p.GetArch(), p.GetState(), inst)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		for _, db := range inv.GetDatabases() {
			if db.GetError() != "" {
				fmt.Fprintf(w, "  database %s unreadable: %s\n", db.GetPath(), db.GetError())
			}
		}
	}
	if len(changes) > 0 {
		fmt.Fprintf(w, "\nRecent changes\n")
		return Changes(w, changes, false, now)
	}
	return nil
}
