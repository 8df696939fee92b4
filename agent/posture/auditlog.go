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

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/posture/kaudit"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "audit-logging",
		Reads: []string{"/etc/audit/audit.rules", "/etc/audit/rules.d/*.rules", "/etc/systemd/journald.conf{,.d/*.conf}", "/var/log/journal", "facts: node.tracing"},
		Run:   runAuditLogging,
	})
}

func runAuditLogging(ctx context.Context, env *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding {
	return []*nodewardv1.Finding{
		auditd(ctx, env),
		journaldPersistent(env.Root),
		nodewardTracing(facts),
	}
}

// countAuditRules counts the rule lines of an audit rules file: every
// line that is not blank or a comment, except control lines (-D, -b, -f,
// -e, -r, --backlog_wait_time ...), which configure auditd, not what it
// records.
func countAuditRules(r io.Reader) (int, error) {
	n := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		if strings.HasPrefix(l, "-a") || strings.HasPrefix(l, "-A") || strings.HasPrefix(l, "-w") {
			n++
		}
	}
	return n, sc.Err()
}

func auditd(ctx context.Context, env *source.Env) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "audit.auditd",
		Title:       "auditd runs with audit rules loaded",
		Severity:    sevMedium,
		Remediation: "Install and enable auditd with rules for identity, privilege and kernel-module changes (the CIS rule set), or rely on nodeward's exec tracing and ship it off the node.",
		References:  []*nodewardv1.Reference{refCIS("Ensure auditd service is enabled and active"), refEKS("Treat your infrastructure as immutable and automate the replacement of your worker nodes")},
	}
	s := readService(ctx, env, []string{"auditd.service"}, []string{"auditd"})
	f.Evidence = s.evidence
	// On a live node the kernel says who its audit daemon is and which
	// rules are in force; a tree on disk has no kernel to ask.
	kernelRules := -1
	if hostProcMounted(env.Proc) {
		if st, err := kaudit.Query(); err != nil {
			f.Evidence = append(f.Evidence, evd("netlink audit", "", "kernel audit status unavailable: "+err.Error()))
		} else {
			f.Evidence = append(f.Evidence, evd("netlink audit (AUDIT_GET, AUDIT_LIST_RULES)",
				fmt.Sprintf("enabled=%d daemon_pid=%d rules=%d lost=%d", st.Enabled, st.PID, st.Rules, st.Lost), "what the running kernel enforces"))
			s.runningKnown = true
			s.running = st.PID != 0 && st.Enabled != 0
			s.installed = s.installed || st.PID != 0
			kernelRules = st.Rules
		}
	}
	rules, files, err := auditRules(env.Root)
	if err != nil {
		f.Evidence = append(f.Evidence, evd("/etc/audit", "", "rules: "+err.Error()))
	} else {
		src := strings.Join(files, ", ")
		if src == "" {
			src = "/etc/audit/audit.rules"
		}
		f.Evidence = append(f.Evidence, evd(src, fmt.Sprintf("%d rules", rules), "watch (-w) and syscall (-a) rules on disk"))
	}
	if kernelRules >= 0 {
		rules, err = kernelRules, nil
	}
	switch {
	case s.running && rules > 0:
		f.Status = statPass
	case s.running && err == nil:
		f.Status = statFail
		f.Evidence = append(f.Evidence, evd("decision", "", "auditd runs without rules: it records next to nothing"))
	case !s.installed && (s.runningKnown || len(files) == 0):
		f.Status = statFail
		f.Evidence = append(f.Evidence, evd("decision", "", "auditd is not installed"))
	case s.runningKnown && !s.running:
		f.Status = statFail
		reason := "auditd is installed but not running"
		if s.masked {
			reason = "auditd is masked: systemd will not start it"
		}
		f.Evidence = append(f.Evidence, evd("decision", "", reason))
	default:
		f.Status = statUnknown
		f.Evidence = append(f.Evidence, evd("decision", "", "whether auditd runs cannot be told without systemd or the host's /proc"))
	}
	return f
}

// auditRules counts the rules in /etc/audit/audit.rules, or in
// rules.d/*.rules when augenrules has not merged them yet.
func auditRules(root *hostfs.Root) (int, []string, error) {
	var files []string
	if ok, err := root.Exists("/etc/audit/audit.rules"); err != nil {
		return 0, nil, err
	} else if ok {
		files = append(files, "/etc/audit/audit.rules")
	} else {
		entries, err := root.ReadDir("/etc/audit/rules.d")
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, nil, err
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".rules") {
				files = append(files, "/etc/audit/rules.d/"+e.Name())
			}
		}
	}
	total := 0
	for _, p := range files {
		b, err := root.ReadFile(p, smallFile)
		if err != nil {
			return total, files, err
		}
		n, err := countAuditRules(strings.NewReader(string(b)))
		if err != nil {
			return total, files, fmt.Errorf("%s: %w", p, err)
		}
		total += n
	}
	return total, files, nil
}

// ParseJournaldStorage returns the Storage= value of a journald.conf (or
// drop-in), "" when the file does not set it. Only the [Journal] section
// counts; later assignments win, as systemd reads them.
func ParseJournaldStorage(r io.Reader) (string, error) {
	v := ""
	section := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if l[0] == '[' && strings.HasSuffix(l, "]") {
			section = l[1 : len(l)-1]
			continue
		}
		if section != "Journal" {
			continue
		}
		k, val, ok := strings.Cut(l, "=")
		if ok && strings.TrimSpace(k) == "Storage" {
			v = strings.ToLower(strings.TrimSpace(val))
		}
	}
	return v, sc.Err()
}

func journaldPersistent(root *hostfs.Root) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "audit.journald-persistent",
		Title:       "journald keeps logs across reboots",
		Severity:    sevLow,
		Remediation: "Set Storage=persistent in /etc/systemd/journald.conf (or a drop-in) and ship the journal off the node (CloudWatch, Fluent Bit).",
		References:  []*nodewardv1.Reference{refCIS("Ensure journald is configured to write logfiles to persistent disk"), refSTIG("AZLX-23-000135", "Amazon Linux 2023 systemd-journald service must be enabled")},
	}
	// systemd reads the main file, then drop-ins in lexical order of their
	// names across /usr/lib, /run and /etc (same name: /etc wins).
	var files []string
	if ok, _ := root.Exists("/etc/systemd/journald.conf"); ok {
		files = append(files, "/etc/systemd/journald.conf")
	}
	dropins := map[string]string{}
	for _, d := range []string{"/usr/lib/systemd/journald.conf.d", "/lib/systemd/journald.conf.d", "/run/systemd/journald.conf.d", "/etc/systemd/journald.conf.d"} {
		entries, err := root.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".conf") {
				dropins[e.Name()] = d + "/" + e.Name()
			}
		}
	}
	names := make([]string, 0, len(dropins))
	for n := range dropins {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, dropins[n])
	}
	journald := false
	for _, p := range []string{"/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"} {
		if ok, _ := root.Exists(p); ok {
			journald = true
		}
	}
	if !journald && len(files) == 0 {
		f.Status = statNA
		f.Evidence = []*nodewardv1.Evidence{evd("/usr/lib/systemd/systemd-journald", "", "journald is not installed")}
		return f
	}
	storage, from := "auto", "default"
	for _, p := range files {
		b, err := root.ReadFile(p, smallFile)
		if err != nil {
			f.Status = statError
			f.Evidence = append(f.Evidence, evd(p, "", err.Error()))
			return f
		}
		v, err := ParseJournaldStorage(strings.NewReader(string(b)))
		if err != nil {
			f.Status = statError
			f.Evidence = append(f.Evidence, evd(p, "", err.Error()))
			return f
		}
		if v != "" {
			storage, from = v, p
		}
	}
	f.Evidence = append(f.Evidence, evd(from, "Storage="+storage, fmt.Sprintf("effective value after %d file(s)", len(files))))
	switch storage {
	case "persistent":
		f.Status = statPass
	case "auto":
		ok, err := root.Exists("/var/log/journal")
		switch {
		case err != nil:
			f.Status = statUnknown
			f.Evidence = append(f.Evidence, evd("/var/log/journal", "", err.Error()))
		case ok:
			f.Status = statPass
			f.Evidence = append(f.Evidence, evd("/var/log/journal", "present", "with Storage=auto journald persists when this directory exists"))
		default:
			f.Status = statFail
			f.Evidence = append(f.Evidence, evd("/var/log/journal", "", "not present: with Storage=auto the journal stays in /run and is lost at reboot"))
		}
	default:
		f.Status = statFail
		f.Evidence = append(f.Evidence, evd("decision", storage, "the journal is not written to disk"))
	}
	return f
}

func nodewardTracing(facts *nodewardv1.Snapshot) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "audit.nodeward-tracing",
		Title:       "nodeward's exec and SSH tracing is active on the node",
		Severity:    sevLow,
		Remediation: "Run the agent with its tracer (privileged, hostPID, BTF-enabled kernel); see the tracing status reason.",
		References:  []*nodewardv1.Reference{refEKS("Treat your infrastructure as immutable and automate the replacement of your worker nodes")},
	}
	tr := facts.GetNode().GetTracing()
	if tr == nil {
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd("facts: node.tracing", "", "no tracing status was reported (a one-shot report runs no tracer)")}
		return f
	}
	v := strings.ToLower(strings.TrimPrefix(tr.GetState().String(), "TRACING_STATE_"))
	e := evd("facts: node.tracing", v, tr.GetReason())
	if len(tr.GetPrograms()) > 0 {
		e.Reason = strings.TrimSpace(e.Reason + " programs: " + strings.Join(tr.GetPrograms(), ", "))
	}
	f.Evidence = []*nodewardv1.Evidence{e}
	switch tr.GetState() {
	case nodewardv1.TracingState_TRACING_STATE_ACTIVE:
		f.Status = statPass
	case nodewardv1.TracingState_TRACING_STATE_UNAVAILABLE, nodewardv1.TracingState_TRACING_STATE_DISABLED:
		f.Status = statFail
	default:
		f.Status = statUnknown
	}
	return f
}
