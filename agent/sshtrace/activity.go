package sshtrace

import (
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// activityWindow is how far back Activity counts.
const activityWindow = 24 * time.Hour

// maxRecent bounds the logins and failures remembered for Activity.
const maxRecent = 4096

type recentLogin struct {
	at       time.Time
	user     string
	uid      uint32
	method   string
	from     string
	password bool
}

// noteLogin remembers a login that went out; mu is held.
func (t *Tracker) noteLogin(ev *nodewardv1.SshEvent, at time.Time) {
	m := ev.GetAuthMethod()
	t.logins = append(t.logins, recentLogin{at: at, user: ev.GetUser(), uid: ev.GetUid(), method: m, from: ev.GetRemoteAddress(),
		password: m == "password" || m == "keyboard-interactive"})
	if len(t.logins) > maxRecent {
		t.logins = t.logins[len(t.logins)-maxRecent:]
	}
}

// noteFailure remembers a failed attempt; mu is held.
func (t *Tracker) noteFailure(at time.Time) {
	t.failures = append(t.failures, at)
	if len(t.failures) > maxRecent {
		t.failures = t.failures[len(t.failures)-maxRecent:]
	}
}

// Activity sums up the last day's SSH sessions for the posture checks.
func (t *Tracker) Activity() *nodewardv1.SshActivity {
	t.mu.Lock()
	defer t.mu.Unlock()
	since := time.Now().Add(-activityWindow)
	a := &nodewardv1.SshActivity{Tracking: true, Since: timestamppb.New(since)}
	for _, l := range t.logins {
		if l.at.Before(since) {
			continue
		}
		a.Logins++
		if l.uid == 0 {
			a.RootLogins++
		}
		if l.password {
			a.PasswordLogins++
		}
		a.LastLogin = timestamppb.New(l.at)
		a.LastLoginUser = l.user
		a.LastLoginFrom = l.from
	}
	for _, f := range t.failures {
		if !f.Before(since) {
			a.FailedAttempts++
		}
	}
	for _, c := range t.conns {
		if c.loggedIn && c.closedAt.IsZero() {
			a.OpenSessions++
		}
	}
	return a
}
