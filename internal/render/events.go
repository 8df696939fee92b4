package render

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// eventSummary is what happened, in a few words.
func eventSummary(ev *nodewardv1.Event) (kind, who, what string) {
	who = "-"
	switch b := ev.GetBody().(type) {
	case *nodewardv1.Event_Exec:
		p := b.Exec.GetProcess()
		args := quoteArgs(p.GetArgs())
		if p.GetArgsTruncated() {
			args += " …"
		}
		return "exec", procWho(p), fmt.Sprintf("%s %s", p.GetFilename(), args)
	case *nodewardv1.Event_Exit:
		p := b.Exit.GetProcess()
		how := fmt.Sprintf("code %d", b.Exit.GetExitCode())
		if b.Exit.GetSignal() != 0 {
			how = fmt.Sprintf("signal %d", b.Exit.GetSignal())
		}
		return "exit", procWho(p), fmt.Sprintf("%s %s after %s", p.GetFilename(), how, b.Exit.GetDuration().AsDuration().Round(time.Millisecond))
	case *nodewardv1.Event_Ssh:
		s := b.Ssh
		k := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.GetKind().String(), "SSH_EVENT_KIND_")), "_", " ")
		if s.GetUser() != "" {
			who = s.GetUser()
		}
		return "ssh", who, fmt.Sprintf("%s from %s:%d session %s", k, s.GetRemoteAddress(), s.GetRemotePort(), s.GetSessionId())
	case *nodewardv1.Event_Loss:
		l := b.Loss
		return "loss", who, fmt.Sprintf("node lost events: ring buffer %d, queue %d, spool %d", l.GetRingBuffer(), l.GetQueue(), l.GetSpool())
	case *nodewardv1.Event_Gap:
		g := b.Gap
		if g.GetMissed() > 0 {
			return "gap", who, fmt.Sprintf("missed %d events (this tail read too slowly)", g.GetMissed())
		}
		return "gap", who, fmt.Sprintf("sequences %d..%d never reached the collector", g.GetFromSequence(), g.GetToSequence())
	}
	return "?", who, ""
}

func procWho(p *nodewardv1.Process) string {
	who := fmt.Sprintf("uid=%d pid=%d", p.GetUid(), p.GetPid())
	if pod := p.GetPod(); pod.GetName() != "" {
		who += " " + pod.GetNamespace() + "/" + pod.GetName()
	}
	if s := p.GetSession(); s.GetId() != "" {
		kind := strings.ToLower(strings.TrimPrefix(s.GetKind().String(), "SESSION_KIND_"))
		who += " " + kind + ":" + s.GetUser()
	}
	return who
}

// quoteArgs joins argv for one line of output: an argument with spaces,
// quotes or control characters (a multi-line `sh -c` script, say) is
// Go-quoted, so one event stays one line and reads unambiguously.
func quoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == '"' || r == '\\' || r == 0x7f }) {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// Events prints stored events as a table.
func Events(w io.Writer, evs []*nodewardv1.Event) error {
	if len(evs) == 0 {
		_, err := fmt.Fprintln(w, "No events match.")
		return err
	}
	tw := newTab(w)
	fmt.Fprintln(tw, "TIME\tNODE\tKIND\tWHO\tWHAT")
	for _, ev := range evs {
		kind, who, what := eventSummary(ev)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ev.GetTime().AsTime().UTC().Format("2006-01-02 15:04:05.000"), Truncate(ev.GetNodeName(), 36),
			kind, Truncate(who, 44), Truncate(what, 100))
	}
	return tw.Flush()
}

// EventLine prints one live event as one line (the tail); gaps stand out.
func EventLine(w io.Writer, ev *nodewardv1.Event) error {
	kind, who, what := eventSummary(ev)
	if ev.GetGap() != nil {
		node := ""
		if ev.GetNodeName() != "" {
			node = ev.GetNodeName() + " "
		}
		_, err := fmt.Fprintln(w, paint(Colour(w), yellow, fmt.Sprintf("-- %s%s --", node, what)))
		return err
	}
	if ev.GetLoss() != nil {
		what = paint(Colour(w), red, what)
	}
	_, err := fmt.Fprintf(w, "%s %s %-4s %s %s\n", ev.GetTime().AsTime().UTC().Format("15:04:05.000"), ev.GetNodeName(), kind, who, what)
	return err
}
