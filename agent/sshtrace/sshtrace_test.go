package sshtrace

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/tracer"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// lab is a real sshd on 127.0.0.1 with test users and keys, traced by the
// real exec tracer and the SSH tracker, glued as the agent glues them.
type lab struct {
	t       *testing.T
	dir     string
	port    int
	sshdLog string
	sshd    *exec.Cmd
	trk     *Tracker

	mu     sync.Mutex
	events []*nodewardv1.Event
}

func requireTools(t *testing.T) {
	t.Helper()
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"/usr/sbin/sshd", "ssh", "ssh-keygen", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed (openssh-server, openssh-client)")
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// ensureUser makes a local user with this key in its authorized_keys.
func ensureUser(t *testing.T, user, pubKey string) {
	t.Helper()
	if exec.Command("id", user).Run() != nil {
		run(t, "useradd", "-m", "-s", "/bin/bash", user)
	}
	run(t, "sh", "-c", fmt.Sprintf("echo '%s:Correct-Horse-1' | chpasswd", user))
	home := "/home/" + user
	run(t, "install", "-d", "-m", "700", "-o", user, "-g", user, home+"/.ssh")
	if err := os.WriteFile(home+"/.ssh/authorized_keys", []byte(pubKey), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "chown", user+":"+user, home+"/.ssh/authorized_keys")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startLab starts the tracers, then sshd from sshdPath.
func startLab(t *testing.T, sshdPath string, users []string) *lab {
	t.Helper()
	dir := t.TempDir()
	l := &lab{t: t, dir: dir, port: freePort(t), sshdLog: filepath.Join(dir, "sshd.log")}
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "hostkey"))
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "userkey"))
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "wrongkey"))
	pub, err := os.ReadFile(filepath.Join(dir, "userkey.pub"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		ensureUser(t, u, string(pub))
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/hostkey
PidFile %s/sshd.pid
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
MaxStartups 50:30:100
LogLevel VERBOSE
`, l.port, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.sshdLog, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	root, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	ctx, cancel := context.WithCancel(context.Background())
	trk, err := New(Config{NodeName: "lab", BootID: strings.TrimSpace(string(boot)), Proc: "/proc", Root: root,
		LogPaths: []string{l.sshdLog}})
	if err != nil {
		cancel()
		testutil.Unavailable(t, "SSH tracking cannot load here: "+err.Error())
	}
	tr, err := tracer.New(tracer.Config{NodeName: "lab", BootID: strings.TrimSpace(string(boot)), Proc: "/proc"})
	if err != nil {
		cancel()
		trk.Close()
		testutil.Unavailable(t, "exec tracing cannot load here: "+err.Error())
	}
	l.trk = trk
	var wg sync.WaitGroup
	wg.Go(func() { _ = trk.Run(ctx) })
	wg.Go(func() {
		for ev := range trk.Events() {
			l.add(ev)
		}
	})
	wg.Go(func() {
		_ = tr.Run(ctx, func(ev *nodewardv1.Event) {
			if p := ev.GetExec().GetProcess(); p != nil {
				trk.ObserveExec(p.GetPid())
				p.Session = trk.SessionOf(ev.GetExec())
				l.add(ev)
			}
		})
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		tr.Close()
		trk.Close()
	})
	// Let the tracers settle before sshd starts, so its exec is seen.
	time.Sleep(300 * time.Millisecond)

	l.sshd = exec.Command(sshdPath, "-D", "-f", filepath.Join(dir, "sshd_config"), "-E", l.sshdLog)
	if err := l.sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.sshd.Process.Kill(); _ = l.sshd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", l.port))
		if err == nil {
			// This probe is itself a connection that sends nothing; wait
			// for sshd to log it so later counts start after it.
			c.Close()
			waitFor(t, "sshd to log the probe", func() bool { return len(l.sshdConnections()) == 1 })
			// Its exec reaches the tracker through the exec tracer's ring
			// buffer; on a loaded machine that can trail the first logins.
			waitFor(t, "the tracker to follow sshd", func() bool { return trk.Follows(uint32(l.sshd.Process.Pid)) })
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(l.sshdLog)
			t.Fatalf("sshd did not listen: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return l
}

func (l *lab) add(ev *nodewardv1.Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

func (l *lab) snapshot() []*nodewardv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func (l *lab) sshRun(user, key, command string) error {
	base := []string{"-p", strconv.Itoa(l.port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-i", filepath.Join(l.dir, key), user + "@127.0.0.1", command}
	return exec.Command("ssh", base...).Run()
}

func (l *lab) wrongPassword(user string) error {
	askpass := filepath.Join(l.dir, "askpass.sh")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho wrong-password\n"), 0o755); err != nil {
		return err
	}
	cmd := exec.Command("setsid", "-w", "ssh", "-p", strconv.Itoa(l.port), "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
		"-o", "NumberOfPasswordPrompts=1", "-o", "LogLevel=ERROR", user+"@127.0.0.1", "true")
	cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force")
	return cmd.Run()
}

// sshdConnections reads the remote ports sshd itself logged, in order: the
// independent oracle for what the kernel side saw.
func (l *lab) sshdConnections() []uint32 {
	b, _ := os.ReadFile(l.sshdLog)
	re := regexp.MustCompile(`Connection from 127\.0\.0\.1 port (\d+) on`)
	var ports []uint32
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		p, _ := strconv.Atoi(m[1])
		ports = append(ports, uint32(p))
	}
	return ports
}

func sshEvents(evs []*nodewardv1.Event, port uint32) []*nodewardv1.SshEvent {
	var out []*nodewardv1.SshEvent
	for _, e := range evs {
		if s := e.GetSsh(); s != nil && s.GetRemotePort() == port {
			out = append(out, s)
		}
	}
	return out
}

func kinds(evs []*nodewardv1.SshEvent) []string {
	var k []string
	for _, e := range evs {
		k = append(k, strings.TrimPrefix(e.GetKind().String(), "SSH_EVENT_KIND_"))
	}
	return k
}

// waitKinds waits until the connection from port shows every kind in want.
func (l *lab) waitKinds(port uint32, want ...string) []*nodewardv1.SshEvent {
	l.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		evs := sshEvents(l.snapshot(), port)
		got := kinds(evs)
		ok := true
		for _, w := range want {
			if !slices.Contains(got, w) {
				ok = false
			}
		}
		if ok {
			return evs
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("connection from port %d: kinds %v, want %v", port, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// commandsIn lists what the session's user ran: processes of the session
// with the user's uid. (PAM runs its own helpers, such as motd scripts, as
// root inside the session; they carry the session too.)
func commandsIn(evs []*nodewardv1.Event, session string) []string {
	var cmds []string
	for _, e := range evs {
		if p := e.GetExec().GetProcess(); p != nil && p.GetSession().GetId() == session && p.GetUid() == p.GetSession().GetUid() {
			cmds = append(cmds, filepath.Base(p.GetFilename())+" "+strings.Join(p.GetArgs()[1:], " "))
		}
	}
	return cmds
}

func testSessions(t *testing.T, sshdPath string) {
	l := startLab(t, sshdPath, []string{"nwssh0"})
	probe := l.sshdConnections()

	// A key login that runs two commands.
	if err := l.sshRun("nwssh0", "userkey", "id; uname -a"); err != nil {
		t.Fatalf("key login: %v", err)
	}
	// A wrong key, a wrong password, and a connect that sends nothing.
	if err := l.sshRun("nwssh0", "wrongkey", "true"); err == nil {
		t.Fatal("the wrong key logged in")
	}
	if err := l.wrongPassword("nwssh0"); err == nil {
		t.Fatal("the wrong password logged in")
	}
	silent, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", l.port))
	if err != nil {
		t.Fatal(err)
	}
	silentPort := uint32(silent.LocalAddr().(*net.TCPAddr).Port)
	// sshd logs it from a re-executed child, which may take a while.
	waitFor(t, "sshd to log the silent connect", func() bool { return len(l.sshdConnections()) >= len(probe)+4 })
	silent.Close()

	ports := l.sshdConnections()
	if len(ports) != len(probe)+4 {
		t.Fatalf("sshd logged %d connections, want %d", len(ports), len(probe)+4)
	}
	keyPort, wrongKeyPort, passwordPort := ports[len(probe)], ports[len(probe)+1], ports[len(probe)+2]
	if ports[len(probe)+3] != silentPort {
		t.Fatalf("sshd saw the silent connect from port %d, the test from %d", ports[len(probe)+3], silentPort)
	}

	login := l.waitKinds(keyPort, "CONNECTION_ACCEPTED", "LOGIN", "LOGOUT", "CONNECTION_CLOSED")
	var session string
	for _, e := range login {
		if e.GetRemoteAddress() != "127.0.0.1" || e.GetSessionId() == "" {
			t.Errorf("event without address or session: %v", e)
		}
		session = e.GetSessionId()
		switch e.GetKind() {
		case nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_ACCEPTED:
			if e.GetLocalPort() != uint32(l.port) || e.GetSshdPid() == 0 {
				t.Errorf("accepted: local port %d (want %d), sshd pid %d", e.GetLocalPort(), l.port, e.GetSshdPid())
			}
		case nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGIN:
			u, _ := exec.Command("id", "-u", "nwssh0").Output()
			if e.GetUser() != "nwssh0" || strconv.Itoa(int(e.GetUid())) != strings.TrimSpace(string(u)) || e.GetAuthMethod() != "publickey" ||
				!strings.HasPrefix(e.GetKeyFingerprint(), "SHA256:") {
				t.Errorf("login: %v", e)
			}
		case nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_CLOSED:
			if !e.GetLoggedIn() {
				t.Errorf("closed: logged_in false after a login")
			}
		}
	}
	for _, e := range login {
		if e.GetSessionId() != session {
			t.Errorf("one connection, two session ids: %q and %q", e.GetSessionId(), session)
		}
	}
	// Exactly the commands run inside the session, each linked to it.
	var cmds []string
	waitFor(t, "the session's commands", func() bool {
		cmds = commandsIn(l.snapshot(), session)
		return len(cmds) >= 3
	})
	want := []string{"bash -c id; uname -a", "id ", "uname -a"}
	if !slices.Equal(cmds, want) {
		t.Errorf("commands in the session = %q, want %q", cmds, want)
	}

	for _, c := range []struct {
		port   uint32
		method string
	}{{wrongKeyPort, "publickey"}, {passwordPort, "password"}} {
		evs := l.waitKinds(c.port, "CONNECTION_ACCEPTED", "AUTH_FAILURE", "CONNECTION_CLOSED")
		for _, e := range evs {
			switch e.GetKind() {
			case nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGIN:
				t.Errorf("failed attempt from port %d logged in: %v", c.port, e)
			case nodewardv1.SshEventKind_SSH_EVENT_KIND_AUTH_FAILURE:
				if e.GetUser() != "nwssh0" || e.GetAuthMethod() != c.method || e.GetSessionId() == "" {
					t.Errorf("auth failure: %v", e)
				}
			case nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_CLOSED:
				if e.GetLoggedIn() {
					t.Errorf("failed attempt closed with logged_in")
				}
			}
		}
	}
	evs := l.waitKinds(silentPort, "CONNECTION_ACCEPTED", "CONNECTION_CLOSED")
	if got := kinds(evs); len(got) != 2 {
		t.Errorf("silent connect: %v, want accepted and closed only", got)
	}
	// The tracker follows every sshd on the host, so other SSH traffic on the
	// machine may add to these; this lab adds one key login and two failures.
	a := l.trk.Activity()
	if a.GetLogins() < 1 || a.GetFailedAttempts() < 2 || a.GetLastLogin() == nil {
		t.Errorf("activity = %v", a)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSSHSessions(t *testing.T) {
	requireTools(t)
	testSessions(t, "/usr/sbin/sshd")
}

// TestSSHSessionsRenamedBinary runs the same with sshd copied to another
// path and name: it is recognised by what it is, not what it is called.
func TestSSHSessionsRenamedBinary(t *testing.T) {
	requireTools(t)
	dir := t.TempDir()
	renamed := filepath.Join(dir, "portd")
	run(t, "cp", "/usr/sbin/sshd", renamed)
	testSessions(t, renamed)
}

// TestConcurrentSessionsNotMixed runs ten sessions at once as ten users;
// every command lands in its own user's session.
func TestConcurrentSessionsNotMixed(t *testing.T) {
	requireTools(t)
	users := make([]string, 10)
	for i := range users {
		users[i] = fmt.Sprintf("nwssh%d", i)
	}
	l := startLab(t, "/usr/sbin/sshd", users)
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	for i, u := range users {
		wg.Go(func() {
			if err := l.sshRun(u, "userkey", fmt.Sprintf("sleep 0.5; /bin/echo token-%d", i)); err != nil {
				errs <- fmt.Errorf("%s: %w", u, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "ten logins and their commands", func() bool {
		n := 0
		for _, e := range l.snapshot() {
			if p := e.GetExec().GetProcess(); p != nil && p.GetFilename() == "/bin/echo" && p.GetSession() != nil {
				n++
			}
		}
		return n >= len(users)
	})
	for _, e := range l.snapshot() {
		p := e.GetExec().GetProcess()
		if p == nil || p.GetFilename() != "/bin/echo" || len(p.GetArgs()) < 2 || !strings.HasPrefix(p.GetArgs()[1], "token-") {
			continue
		}
		i := strings.TrimPrefix(p.GetArgs()[1], "token-")
		if want := "nwssh" + i; p.GetSession().GetUser() != want {
			t.Errorf("token-%s ran in %q's session, want %q", i, p.GetSession().GetUser(), want)
		}
	}
}
