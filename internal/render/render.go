// Package render prints nodeward's messages as tables for people: aligned,
// readable at 120 columns, no colour unless asked.
package render

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func newTab(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// Ago says how long before now t was, coarsely: "4s ago", "3m ago".
func Ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

// Truncate cuts s to n runes with an ellipsis.
func Truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func osName(n *nodewardv1.Node) string {
	if p := n.GetOs().GetPrettyName(); p != "" {
		return p
	}
	if n.GetOs() == nil {
		return "-"
	}
	return strings.TrimSpace(n.GetOs().GetId() + " " + n.GetOs().GetVersionId())
}

// Nodes prints the fleet list.
func Nodes(w io.Writer, nodes []*nodewardv1.Node, now time.Time) error {
	if len(nodes) == 0 {
		_, err := fmt.Fprintln(w, "No nodes have reported yet.")
		return err
	}
	tw := newTab(w)
	fmt.Fprintln(tw, "NAME\tOS\tKERNEL\tARCH\tAGENT\tSTREAM\tLAST SEEN\tSCORE\tFAILING")
	for _, n := range nodes {
		stream := "down"
		if n.GetConnected() {
			stream = "up"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", Truncate(n.GetName(), 40), Truncate(osName(n), 32),
			Truncate(n.GetKernelRelease(), 24), n.GetArchitecture(), Truncate(n.GetAgentVersion(), 18), stream,
			Ago(n.GetLastSeen().AsTime(), now), Score(n.GetPosture()), Failing(n.GetPosture()))
	}
	return tw.Flush()
}

// Node prints one node and, when there is one, its latest snapshot.
func Node(w io.Writer, n *nodewardv1.Node, snap *nodewardv1.Snapshot, now time.Time) error {
	tw := newTab(w)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("Node", n.GetName())
	if osr := n.GetOs(); osr != nil {
		row("OS", fmt.Sprintf("%s (id=%s version_id=%s)", osName(n), osr.GetId(), osr.GetVersionId()))
	}
	row("Kernel", strings.TrimSpace(n.GetKernelRelease()+" "+paren(n.GetArchitecture())))
	if n.GetBootTime() != nil {
		row("Booted", fmt.Sprintf("%s (%s, boot id %s)", n.GetBootTime().AsTime().UTC().Format(time.RFC3339), Ago(n.GetBootTime().AsTime(), now), n.GetBootId()))
	}
	row("Hostname", n.GetHostname())
	if len(n.GetEksRelease()) > 0 {
		row("EKS AMI", fmt.Sprintf("%s built %s", n.GetEksRelease()["AMI_NAME"], n.GetEksRelease()["BUILD_TIME"]))
	}
	row("Agent", n.GetAgentVersion())
	if n.GetLastSeen() != nil {
		stream := "stream down"
		if n.GetConnected() {
			stream = "stream up"
		}
		row("Last seen", fmt.Sprintf("%s (%s, sequence %d)", Ago(n.GetLastSeen().AsTime(), now), stream, n.GetLastSequence()))
	}
	if t := n.GetTracing(); t != nil {
		row("Tracing", strings.TrimSpace(strings.ToLower(strings.TrimPrefix(t.GetState().String(), "TRACING_STATE_"))+" "+t.GetReason()))
	}
	if p := n.GetPosture(); p.GetDecided() > 0 || p.GetUnknown() > 0 || p.GetErrors() > 0 {
		row("Posture", fmt.Sprintf("score %s/100, failing: %s, undecided: %d unknown, %d error", Score(p), Failing(p), p.GetUnknown(), p.GetErrors()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if snap == nil {
		_, err := fmt.Fprintln(w, "\nNo snapshot received yet.")
		return err
	}
	if fs := snap.GetFindings(); len(fs) > 0 {
		fmt.Fprintf(w, "\nFindings (%d, failing first)\n", len(fs))
		if err := Findings(w, fs, false, now); err != nil {
			return err
		}
	}
	return sources(w, snap)
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}

func sources(w io.Writer, snap *nodewardv1.Snapshot) error {
	if len(snap.GetSources()) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nSources (collected %s)\n", snap.GetCollectedAt().AsTime().UTC().Format(time.RFC3339))
	tw := newTab(w)
	fmt.Fprintln(tw, "  SOURCE\tSTATUS\tTIME\tDETAIL")
	srcs := append([]*nodewardv1.SourceStatus(nil), snap.GetSources()...)
	sort.Slice(srcs, func(i, j int) bool { return srcs[i].GetName() < srcs[j].GetName() })
	for _, s := range srcs {
		st := "ok"
		if !s.GetOk() {
			st = "error"
		}
		d := time.Duration(s.GetDurationMicros()) * time.Microsecond
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.GetName(), st, d.Round(time.Microsecond*100), Truncate(s.GetError(), 80))
	}
	return tw.Flush()
}
