// Package sshlog reads sshd's log lines (auth.log, secure, the journal's
// messages, or sshd -E output) into SshEvents that enrich the kernel-side
// session events: the auth method, the key fingerprint, and failures the
// kernel cannot see. It never decides on its own whether a login happened;
// the kernel-side events stand without it.
package sshlog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// Line is one sshd log line: when and by which process, if the log says,
// and what it means.
type Line struct {
	Time  time.Time
	PID   uint32
	Event *nodewardv1.SshEvent
}

// maxLine bounds one log line; longer lines are skipped.
const maxLine = 16 << 10

// Read parses every sshd line in r and calls fn for each it understands.
// year fills in the year that RFC 3164 timestamps leave out.
func Read(r io.Reader, year int, fn func(Line)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	for sc.Scan() {
		if l, ok := ParseLine(sc.Text(), year); ok {
			fn(l)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return fmt.Errorf("sshd log: %w", err)
	}
	return nil
}

// ParseLine parses one line in syslog (RFC 3339 or RFC 3164 stamps), journal
// short or bare `sshd -E` form.
func ParseLine(s string, year int) (Line, bool) {
	var l Line
	msg := s
	if i := strings.Index(s, "sshd"); i >= 0 {
		// "... host sshd[123]: msg" or "sshd-session[123]: msg".
		rest := s[i:]
		if j := strings.Index(rest, "]: "); j >= 0 {
			tag := rest[:j]
			if k := strings.IndexByte(tag, '['); k >= 0 && isSSHDTag(tag[:k]) {
				if pid, err := strconv.ParseUint(tag[k+1:], 10, 32); err == nil {
					l.PID = uint32(pid)
				}
				l.Time = parseStamp(strings.TrimSpace(s[:i]), year)
				msg = rest[j+3:]
			}
		}
	}
	ev, ok := parseMessage(msg)
	if !ok {
		return Line{}, false
	}
	ev.Detail = msg
	l.Event = ev
	return l, true
}

func isSSHDTag(t string) bool {
	return t == "sshd" || t == "sshd-session" || t == "sshd-auth"
}

// parseStamp reads the timestamp and host before the tag.
func parseStamp(prefix string, year int) time.Time {
	f := strings.Fields(prefix)
	if len(f) == 0 {
		return time.Time{}
	}
	if t, err := time.Parse(time.RFC3339Nano, f[0]); err == nil {
		return t
	}
	if len(f) >= 3 {
		if t, err := time.Parse("Jan _2 15:04:05 2006", f[0]+" "+padDay(f[1])+" "+f[2]+" "+strconv.Itoa(year)); err == nil {
			return t
		}
	}
	return time.Time{}
}

func padDay(d string) string {
	if len(d) == 1 {
		return " " + d
	}
	return d
}

// The message shapes sshd logs, by prefix.
func parseMessage(m string) (*nodewardv1.SshEvent, bool) {
	switch {
	case strings.HasPrefix(m, "Accepted "):
		// Accepted publickey for USER from ADDR port PORT ssh2: ED25519 SHA256:...
		method, rest, ok := strings.Cut(m[len("Accepted "):], " for ")
		if !ok {
			return nil, false
		}
		user, addr, port, tail, ok := userFromPort(rest)
		if !ok {
			return nil, false
		}
		ev := &nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGIN, User: user, RemoteAddress: addr, RemotePort: port, AuthMethod: method}
		ev.KeyFingerprint = fingerprint(tail)
		return ev, true
	case strings.HasPrefix(m, "Failed "):
		// Failed password for [invalid user ]USER from ADDR port PORT ssh2
		method, rest, ok := strings.Cut(m[len("Failed "):], " for ")
		if !ok || strings.Contains(method, " ") {
			return nil, false
		}
		rest = strings.TrimPrefix(rest, "invalid user ")
		user, addr, port, tail, ok := userFromPort(rest)
		if !ok {
			return nil, false
		}
		return &nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_AUTH_FAILURE, User: user, RemoteAddress: addr,
			RemotePort: port, AuthMethod: method, KeyFingerprint: fingerprint(tail)}, true
	case strings.HasPrefix(m, "Invalid user "):
		user, addr, port, _, ok := userFromPort(m[len("Invalid user "):])
		if !ok {
			return nil, false
		}
		return &nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_AUTH_FAILURE, User: user, RemoteAddress: addr, RemotePort: port}, true
	case strings.HasPrefix(m, "Connection closed by "), strings.HasPrefix(m, "Disconnected from "), strings.HasPrefix(m, "Connection reset by "):
		// Connection closed by [authenticating|invalid] user USER ADDR port PORT [preauth]
		// Disconnected from user USER ADDR port PORT
		// Connection reset by ADDR port PORT
		rest := m[strings.Index(m, " by ")+4:]
		if strings.HasPrefix(m, "Disconnected from ") {
			rest = m[len("Disconnected from "):]
		}
		preauth := strings.HasSuffix(rest, " [preauth]")
		rest = strings.TrimSuffix(rest, " [preauth]")
		f := strings.Fields(rest)
		if len(f) < 3 || f[len(f)-2] != "port" {
			return nil, false
		}
		addr, port, ok := addrPort(f[len(f)-3], f[len(f)-1])
		if !ok {
			return nil, false
		}
		user := ""
		if i := indexOf(f, "user"); i >= 0 && i+1 < len(f)-3 {
			user = f[i+1]
		}
		kind := nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_CLOSED
		if strings.HasPrefix(m, "Disconnected from user ") {
			kind = nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGOUT
		}
		return &nodewardv1.SshEvent{Kind: kind, User: user, RemoteAddress: addr, RemotePort: port, LoggedIn: !preauth && kind == nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGOUT}, true
	case strings.HasPrefix(m, "Connection from "):
		// Connection from ADDR port PORT on LADDR port LPORT rdomain ""
		f := strings.Fields(m)
		if len(f) < 8 || f[3] != "port" || f[5] != "on" || f[7] != "port" || len(f) < 9 {
			return nil, false
		}
		addr, port, ok := addrPort(f[2], f[4])
		if !ok {
			return nil, false
		}
		laddr, lport, ok := addrPort(f[6], f[8])
		if !ok {
			return nil, false
		}
		return &nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_ACCEPTED, RemoteAddress: addr, RemotePort: port,
			LocalAddress: laddr, LocalPort: lport}, true
	}
	return nil, false
}

// userFromPort splits "USER from ADDR port PORT TAIL".
func userFromPort(s string) (user, addr string, port uint32, tail string, ok bool) {
	i := strings.LastIndex(s, " from ")
	if i <= 0 {
		return "", "", 0, "", false
	}
	user = s[:i]
	f := strings.Fields(s[i+len(" from "):])
	if len(f) < 3 || f[1] != "port" {
		return "", "", 0, "", false
	}
	addr, port, ok = addrPort(f[0], f[2])
	return user, addr, port, strings.Join(f[3:], " "), ok
}

func addrPort(a, p string) (string, uint32, bool) {
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(p, ":"), 10, 16)
	if err != nil {
		return "", 0, false
	}
	return ip.String(), uint32(n), true
}

// fingerprint picks "SHA256:..." out of "ssh2: ED25519 SHA256:...".
func fingerprint(tail string) string {
	for _, f := range strings.Fields(tail) {
		if strings.HasPrefix(f, "SHA256:") || strings.HasPrefix(f, "MD5:") {
			return f
		}
	}
	return ""
}

func indexOf(f []string, s string) int {
	for i, x := range f {
		if x == s {
			return i
		}
	}
	return -1
}
