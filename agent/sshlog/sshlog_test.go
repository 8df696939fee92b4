package sshlog

import (
	"os"
	"strings"
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

type want struct {
	kind    nodewardv1.SshEventKind
	user    string
	addr    string
	port    uint32
	method  string
	fp      string
	pid     uint32
	stamped bool
}

func check(t *testing.T, line string, w want) {
	t.Helper()
	l, ok := ParseLine(line, 2026)
	if !ok {
		t.Fatalf("not parsed: %q", line)
	}
	e := l.Event
	if e.GetKind() != w.kind || e.GetUser() != w.user || e.GetRemoteAddress() != w.addr || e.GetRemotePort() != w.port ||
		e.GetAuthMethod() != w.method || e.GetKeyFingerprint() != w.fp || l.PID != w.pid || l.Time.IsZero() == w.stamped {
		t.Errorf("%q\n got kind=%v user=%q addr=%q port=%d method=%q fp=%q pid=%d time=%v\nwant %+v",
			line, e.GetKind(), e.GetUser(), e.GetRemoteAddress(), e.GetRemotePort(), e.GetAuthMethod(), e.GetKeyFingerprint(), l.PID, l.Time, w)
	}
}

const (
	login   = nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGIN
	failure = nodewardv1.SshEventKind_SSH_EVENT_KIND_AUTH_FAILURE
	closed  = nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_CLOSED
	logout  = nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGOUT
	conn    = nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_ACCEPTED
)

func TestParseLine(t *testing.T) {
	fp := "SHA256:r0+TuujpLc1bOEruudgoHWmTdWPI60FecCv1ucMr07g"
	tests := []struct {
		line string
		want want
	}{
		{"Accepted publickey for sshtest from 127.0.0.1 port 33838 ssh2: ED25519 " + fp,
			want{kind: login, user: "sshtest", addr: "127.0.0.1", port: 33838, method: "publickey", fp: fp}},
		{"2026-11-27T10:42:25.123456+00:00 node-1 sshd[4242]: Accepted password for ec2-user from 10.0.3.7 port 51000 ssh2",
			want{kind: login, user: "ec2-user", addr: "10.0.3.7", port: 51000, method: "password", pid: 4242, stamped: true}},
		{"Nov  7 10:42:25 node-1 sshd[77]: Failed password for invalid user admin from 2001:db8::1 port 22022 ssh2",
			want{kind: failure, user: "admin", addr: "2001:db8::1", port: 22022, method: "password", pid: 77, stamped: true}},
		{"Nov 27 10:42:25 node-1 sshd-session[78]: Failed publickey for root from 192.0.2.9 port 40000 ssh2: RSA SHA256:abc",
			want{kind: failure, user: "root", addr: "192.0.2.9", port: 40000, method: "publickey", fp: "SHA256:abc", pid: 78, stamped: true}},
		{"Invalid user nosuchuser from 127.0.0.1 port 57114",
			want{kind: failure, user: "nosuchuser", addr: "127.0.0.1", port: 57114}},
		{"Connection closed by authenticating user sshtest 127.0.0.1 port 33852 [preauth]",
			want{kind: closed, user: "sshtest", addr: "127.0.0.1", port: 33852}},
		{"Connection reset by 127.0.0.1 port 53650",
			want{kind: closed, addr: "127.0.0.1", port: 53650}},
		{"Disconnected from user sshtest 127.0.0.1 port 33838",
			want{kind: logout, user: "sshtest", addr: "127.0.0.1", port: 33838}},
		{`Connection from 127.0.0.1 port 33838 on 127.0.0.1 port 2299 rdomain ""`,
			want{kind: conn, addr: "127.0.0.1", port: 33838}},
		// A user name with spaces cannot fool the address: the last " from " wins.
		{"Invalid user a from 10.0.0.1 port 1 from 127.0.0.1 port 2",
			want{kind: failure, user: "a from 10.0.0.1 port 1", addr: "127.0.0.1", port: 2}},
	}
	for _, tc := range tests {
		check(t, tc.line, tc.want)
	}
	for _, junk := range []string{"", "Server listening on 127.0.0.1 port 2299.", "Failed password for x from nowhere port 1",
		"Accepted publickey", "kernel: sshd[1]: Accepted", "Connection from 1.2.3.4 port x on y"} {
		if _, ok := ParseLine(junk, 2026); ok {
			t.Errorf("parsed junk %q", junk)
		}
	}
}

// TestRealSSHDLog reads what a real sshd logged for a key login, a wrong key,
// a wrong password, an unknown user and a silent TCP connect.
func TestRealSSHDLog(t *testing.T) {
	f, err := os.Open("testdata/sshd-E.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[nodewardv1.SshEventKind]int{}
	var logins []*nodewardv1.SshEvent
	if err := Read(f, time.Now().Year(), func(l Line) {
		counts[l.Event.GetKind()]++
		if l.Event.GetKind() == login {
			logins = append(logins, l.Event)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if counts[conn] != 5 || counts[login] != 1 || counts[failure] != 4 || counts[closed] != 4 || counts[logout] != 1 {
		t.Errorf("counts by kind = %v", counts)
	}
	if len(logins) != 1 || logins[0].GetAuthMethod() != "publickey" || !strings.HasPrefix(logins[0].GetKeyFingerprint(), "SHA256:") {
		t.Errorf("logins = %v", logins)
	}
}

func FuzzParseLine(f *testing.F) {
	b, _ := os.ReadFile("testdata/sshd-E.log")
	for _, l := range strings.Split(string(b), "\n") {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseLine(s, 2026)
		if ok && l.Event == nil {
			t.Fatal("ok without an event")
		}
	})
}
