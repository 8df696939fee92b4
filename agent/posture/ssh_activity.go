package posture

import (
	"context"
	"fmt"

	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "ssh-activity",
		Reads: []string{"facts: ssh_activity (the agent's SSH session tracking)"},
		Run:   runSSHActivity,
	})
}

// runSSHActivity judges the SSH logins the agent traced in the last day:
// any login at all goes against the practice of reaching nodes through SSM,
// root and password logins are worse.
func runSSHActivity(_ context.Context, _ *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding {
	a := facts.GetSshActivity()
	refs := []*nodewardv1.Reference{refEKS("Minimize access to worker nodes")}
	logins := &nodewardv1.Finding{
		CheckId:     "ssh.logins",
		Title:       "Nobody logged in to the node over SSH in the last day",
		Severity:    sevMedium,
		Remediation: "Use SSM Session Manager for node access, then disable sshd; review who logged in and why.",
		References:  refs,
	}
	root := &nodewardv1.Finding{
		CheckId:     "ssh.root-logins",
		Title:       "Nobody logged in as root over SSH in the last day",
		Severity:    sevHigh,
		Remediation: "Set PermitRootLogin no and log in as a named user; review the root sessions.",
		References:  append(refs, refCIS("Ensure sshd PermitRootLogin is disabled")),
	}
	password := &nodewardv1.Finding{
		CheckId:     "ssh.password-logins",
		Title:       "No SSH login used a password in the last day",
		Severity:    sevHigh,
		Remediation: "Set PasswordAuthentication no and KbdInteractiveAuthentication no; use keys or SSM.",
		References:  append(refs, refCIS("Ensure sshd PasswordAuthentication is disabled")),
	}
	all := []*nodewardv1.Finding{logins, root, password}
	if a == nil || !a.GetTracking() {
		reason := a.GetReason()
		if reason == "" {
			reason = "no SSH activity was reported"
		}
		for _, f := range all {
			f.Status = statUnknown
			f.Evidence = []*nodewardv1.Evidence{evd("facts: ssh_activity", "", reason)}
		}
		return all
	}
	since := a.GetSince().AsTime().UTC().Format("2006-01-02T15:04:05Z")
	judge := func(f *nodewardv1.Finding, n uint32, what string) {
		f.Status = statPass
		if n > 0 {
			f.Status = statFail
		}
		reason := fmt.Sprintf("%d %s since %s", n, what, since)
		if n > 0 && a.GetLastLogin() != nil {
			reason += fmt.Sprintf("; the last login was %s from %s at %s", a.GetLastLoginUser(), a.GetLastLoginFrom(),
				a.GetLastLogin().AsTime().UTC().Format("2006-01-02T15:04:05Z"))
		}
		f.Evidence = []*nodewardv1.Evidence{evd("facts: ssh_activity", fmt.Sprint(n), reason)}
	}
	judge(logins, a.GetLogins(), "SSH logins")
	judge(root, a.GetRootLogins(), "SSH logins as root")
	judge(password, a.GetPasswordLogins(), "SSH logins with a password")
	if a.GetFailedAttempts() > 0 {
		logins.Evidence = append(logins.Evidence, evd("facts: ssh_activity", fmt.Sprint(a.GetFailedAttempts()),
			"failed SSH attempts in the same window (from sshd's log)"))
	}
	return all
}
