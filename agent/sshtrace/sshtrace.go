// Package sshtrace follows SSH sessions on the node from the kernel's side:
// sshd's accepted connections (remote address and port), the login (the
// session child taking the user's uid, with the login uid and audit session
// id PAM gave it), logout and connection close. It enriches them from
// sshd's log when the node keeps one, and lets exec events be tagged with
// the session they belong to through the audit session id every process of
// the session inherits.
package sshtrace

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/tracer"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config configures a Tracker.
type Config struct {
	NodeName string
	BootID   string
	// Proc is the host's procfs; Root the host root (for /etc/passwd and
	// sshd's log).
	Proc string
	Root *hostfs.Root
	// LogPaths are sshd log files under the root to enrich sessions from
	// (auth method, key fingerprint, failed attempts). Missing ones are
	// skipped.
	LogPaths []string
	// LoginHold is how long a login waits for its log line before it goes
	// out without the auth method. Default 2s.
	LoginHold time.Duration
	Log       *slog.Logger
}

// DefaultLogPaths are where distributions keep sshd's messages.
var DefaultLogPaths = []string{"/var/log/auth.log", "/var/log/secure"}

const unsetID = ^uint32(0)

// conn is one accepted connection, served by its own sshd process.
type conn struct {
	id        string // the session id: the exec id of the serving process
	pid       uint32
	remote    string
	rport     uint32
	local     string
	lport     uint32
	accepted  time.Time
	loggedIn  bool
	login     *nodewardv1.SshEvent // held until its log line or LoginHold
	loginAt   time.Time
	heldUntil time.Time
	child     uint32 // the session child running as the user
	session   *nodewardv1.Session
	logged    *nodewardv1.SshEvent // a log line that came before the kernel's login
	closedAt  time.Time            // kept a while after close for late log lines
	// after holds the connection's events that came while its login was
	// held, so they go out after it, in order.
	after []*nodewardv1.Event
}

// logGrace is how long a closed connection still takes its log lines: the
// log is polled, the kernel is not.
const logGrace = 10 * time.Second

// sessionLinger is how long processes a closed session left behind are
// still attributed to it by ancestry.
const sessionLinger = 10 * time.Minute

// Tracker owns the BPF programs and the session table.
type Tracker struct {
	cfg    Config
	objs   sshObjects
	links  []link.Link
	reader *ringbuf.Reader
	out    chan *nodewardv1.Event

	mu       sync.Mutex
	conns    map[uint32]*conn // by serving pid
	byChild  map[uint32]*conn // session child pid -> connection
	byAudit  map[uint32]*conn // audit session id -> connection
	byRemote map[string]*conn // "addr port" -> connection, for log lines
	// byPid holds session children and the processes found to descend from
	// them (or from another way onto the node, such as an SSM session), for
	// when PAM sets no login uid.
	byPid     map[uint32]pidSession
	knownExes map[exeKey]bool
	lost      uint64
	execs     chan uint32
	logins    []recentLogin
	failures  []time.Time
	held      map[*conn]bool // connections whose login awaits its log line
}

type exeKey struct {
	ino uint64
	dev uint32
}

// New loads and attaches the programs. It fails with the reason when the
// kernel cannot run them; the caller goes on without SSH tracking.
func New(cfg Config) (*Tracker, error) {
	if cfg.LoginHold <= 0 {
		cfg.LoginHold = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("ssh tracking: memlock: %w", err)
	}
	if err := ensureTracefs(); err != nil {
		return nil, err
	}
	t := &Tracker{cfg: cfg, out: make(chan *nodewardv1.Event, 1024), conns: map[uint32]*conn{}, byChild: map[uint32]*conn{},
		byAudit: map[uint32]*conn{}, byRemote: map[string]*conn{}, byPid: map[uint32]pidSession{}, knownExes: map[exeKey]bool{},
		execs: make(chan uint32, 4096), held: map[*conn]bool{}}
	if err := loadSshObjects(&t.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("ssh tracking: verifier: %w", ve)
		}
		return nil, fmt.Errorf("ssh tracking: load: %w", err)
	}
	attach := []struct {
		group, name string
		prog        *ebpf.Program
	}{
		{"syscalls", "sys_enter_accept", t.objs.SshEnterAccept},
		{"syscalls", "sys_enter_accept4", t.objs.SshEnterAccept4},
		{"syscalls", "sys_exit_accept", t.objs.SshExitAccept},
		{"syscalls", "sys_exit_accept4", t.objs.SshExitAccept4},
		{"syscalls", "sys_exit_setuid", t.objs.SshExitSetuid},
		{"syscalls", "sys_exit_setresuid", t.objs.SshExitSetresuid},
		{"syscalls", "sys_exit_setreuid", t.objs.SshExitSetreuid},
	}
	for _, a := range attach {
		l, err := link.Tracepoint(a.group, a.name, a.prog, nil)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("ssh tracking: attach %s/%s: %w", a.group, a.name, err)
		}
		t.links = append(t.links, l)
	}
	for _, p := range []*ebpf.Program{t.objs.SshFork, t.objs.SshExit} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("ssh tracking: attach %s: %w", p, err)
		}
		t.links = append(t.links, l)
	}
	rd, err := ringbuf.NewReader(t.objs.SshEvents)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("ssh tracking: ring buffer: %w", err)
	}
	t.reader = rd
	t.scanRunning()
	return t, nil
}

// ensureTracefs mounts tracefs when it is not: syscall tracepoints are
// found through it.
func ensureTracefs() error {
	if _, err := os.Stat("/sys/kernel/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("ssh tracking: tracefs is not mounted and mounting it failed: %w", err)
	}
	return nil
}

// Close detaches everything.
func (t *Tracker) Close() {
	if t.reader != nil {
		t.reader.Close()
	}
	for _, l := range t.links {
		l.Close()
	}
	t.objs.Close()
}

// Events delivers SshEvents, in order, until Run returns.
func (t *Tracker) Events() <-chan *nodewardv1.Event { return t.out }

// scanRunning registers the executables of running sshd processes.
func (t *Tracker) scanRunning() {
	ents, err := os.ReadDir(t.cfg.Proc)
	if err != nil {
		t.cfg.Log.Warn("ssh tracking: cannot list processes", "err", err)
		return
	}
	for _, e := range ents {
		if pid, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			t.checkExec(uint32(pid))
		}
	}
}

// ObserveExec queues a check of the executable a process runs: if it is an
// OpenSSH server, it is registered with the kernel side. The tracer calls it
// for every exec, so a server started (or renamed) later is recognised
// before its first accept. It never blocks; when the queue is full the exec
// is not checked (a long-running server is found again on its next exec or
// by the periodic scan).
func (t *Tracker) ObserveExec(pid uint32) {
	select {
	case t.execs <- pid:
	default:
	}
}

// exeOf identifies pid's executable.
func (t *Tracker) exeOf(pid uint32) (path string, key exeKey, err error) {
	path = filepath.Join(t.cfg.Proc, strconv.FormatUint(uint64(pid), 10), "exe")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", exeKey{}, err
	}
	return path, exeKey{ino: st.Ino, dev: unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)}, nil
}

// Follows reports whether pid runs an executable registered as an OpenSSH
// server: from then on its connections are seen.
func (t *Tracker) Follows(pid uint32) bool {
	_, key, err := t.exeOf(pid)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.knownExes[key]
}

// checkExec registers pid's executable if it is an OpenSSH server.
func (t *Tracker) checkExec(pid uint32) {
	exe, key, err := t.exeOf(pid)
	if err != nil {
		return
	}
	t.mu.Lock()
	_, seen := t.knownExes[key]
	t.mu.Unlock()
	if seen {
		return
	}
	f, err := os.Open(exe)
	if err != nil {
		return
	}
	ok, err := IsSSHDBinary(f)
	f.Close()
	if err != nil {
		return
	}
	if ok {
		k := sshExeKey{Ino: key.ino, Dev: key.dev}
		if err := t.objs.SshdExes.Put(&k, uint8(1)); err != nil {
			t.cfg.Log.Warn("ssh tracking: cannot register sshd executable", "pid", pid, "err", err)
			return // not known yet: tried again on its next exec or scan
		}
	}
	t.mu.Lock()
	t.knownExes[key] = ok
	t.mu.Unlock()
	if !ok {
		return
	}
	target, _ := os.Readlink(exe)
	t.cfg.Log.Info("ssh tracking: following sshd", "exe", target, "pid", pid)
}

// SessionOf returns the SSH session an exec belongs to, or nil: first by
// the audit session id the kernel gave the session (inherited by every
// process in it), else by ancestry from the session child.
func (t *Tracker) SessionOf(ex *nodewardv1.ExecEvent) *nodewardv1.Session {
	p := ex.GetProcess()
	t.mu.Lock()
	defer t.mu.Unlock()
	if id := p.GetAuditSessionId(); id != unsetID {
		if c := t.byAudit[id]; c != nil {
			return c.session
		}
	}
	var found *nodewardv1.Session
	for _, pid := range append([]uint32{p.GetPid(), p.GetPpid()}, ancestorPids(ex)...) {
		if ps, ok := t.byPid[pid]; ok {
			found = ps.session
			break
		}
	}
	if found == nil {
		found = otherAccess(ex)
	}
	if found == nil {
		return nil
	}
	t.remember(p.GetPid(), pidSession{session: found, at: time.Now()})
	return found
}

// pidSession ties a process to the session it belongs to.
type pidSession struct {
	session *nodewardv1.Session
	conn    *conn // nil for sessions other than SSH
	at      time.Time
}

// remember records pid's session, making room by forgetting entries of
// closed SSH connections and, past the bound, old ones; mu is held.
func (t *Tracker) remember(pid uint32, ps pidSession) {
	if len(t.byPid) >= maxSessionPids {
		cutoff := time.Now().Add(-sessionLinger)
		for k, v := range t.byPid {
			if v.at.Before(cutoff) {
				delete(t.byPid, k)
			}
		}
		if len(t.byPid) >= maxSessionPids {
			return
		}
	}
	t.byPid[pid] = ps
}

func ancestorPids(ex *nodewardv1.ExecEvent) []uint32 {
	var pids []uint32
	for _, a := range ex.GetAncestors() {
		pids = append(pids, a.GetPid())
	}
	return pids
}

// maxSessionPids bounds the ancestry table.
const maxSessionPids = 1 << 16

// Run reads kernel events (and sshd's log, when there is one) until ctx
// ends, then closes Events.
func (t *Tracker) Run(ctx context.Context) error {
	defer close(t.out)
	go func() {
		<-ctx.Done()
		t.reader.Close()
	}()
	go func() {
		rescan := time.NewTicker(time.Minute)
		defer rescan.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case pid := <-t.execs:
				t.checkExec(pid)
			case <-rescan.C:
				t.scanRunning()
			}
		}
	}()
	logLines := make(chan logLine, 256)
	for _, p := range t.cfg.LogPaths {
		go t.follow(ctx, p, logLines)
	}
	records := make(chan []byte, 256)
	readErr := make(chan error, 1)
	go func() {
		defer close(records)
		for {
			rec, err := t.reader.Read()
			if err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					readErr <- nil
				} else {
					readErr <- err
				}
				return
			}
			records <- append([]byte(nil), rec.RawSample...)
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case raw, ok := <-records:
			if !ok {
				return <-readErr
			}
			t.handle(raw)
		case l := <-logLines:
			t.handleLog(l)
		case <-tick.C:
			t.releaseHeld(false)
			t.countLoss()
		}
	}
}

func (t *Tracker) emit(ev *nodewardv1.SshEvent, at time.Time) {
	t.out <- &nodewardv1.Event{Time: timestamppb.New(at), Body: &nodewardv1.Event_Ssh{Ssh: ev}}
}

// countLoss turns ring buffer overflows into a LossEvent.
func (t *Tracker) countLoss() {
	var perCPU []uint64
	key := uint32(1)
	if err := t.objs.SshStats.Lookup(&key, &perCPU); err != nil {
		return
	}
	var total uint64
	for _, v := range perCPU {
		total += v
	}
	if total > t.lost {
		n := total - t.lost
		t.lost = total
		t.out <- &nodewardv1.Event{Time: timestamppb.Now(), Body: &nodewardv1.Event_Loss{Loss: &nodewardv1.LossEvent{
			RingBuffer: n, RingBufferByKind: map[string]uint64{"ssh": n},
		}}}
	}
}

func (t *Tracker) handle(raw []byte) {
	var ev sshSshEvent
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &ev); err != nil {
		t.cfg.Log.Warn("ssh tracking: undecodable record", "err", err)
		return
	}
	at := bootToWall(ev.Ktime)
	if t.cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
		t.cfg.Log.Debug("ssh raw", "type", ev.Type, "pid", ev.Pid, "ppid", ev.Ppid, "child", ev.Child, "uid", ev.Uid, "auid", ev.Auid, "ses", ev.Sessionid, "comm", unix.ByteSliceToString(ev.Comm[:]))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Type {
	case 1: // accept, in the listener: the fork that follows carries it
	case 2: // fork: the connection's own process
		remote, local := addr(ev.Family, ev.Raddr), addr(ev.Family, ev.Laddr)
		c := &conn{id: t.execID(ev.Child, ev.StartTicks), pid: ev.Child, remote: remote, rport: uint32(ev.Rport),
			local: local, lport: uint32(ev.Lport), accepted: at}
		t.conns[ev.Child] = c
		t.byRemote[remoteKey(remote, c.rport)] = c
		t.emit(&nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_ACCEPTED, SessionId: c.id, SshdPid: ev.Child,
			RemoteAddress: remote, RemotePort: c.rport, LocalAddress: local, LocalPort: c.lport}, at)
	case 3: // a credential change in sshd
		// The session child is a child of the connection's process that
		// takes a user's uid; the pre-auth child takes the privilege
		// separation user's, and the connection's process itself only
		// juggles root's.
		c := t.conns[ev.Ppid]
		if c == nil || c.loggedIn || ev.Pid == c.pid || t.privsepUser(ev.Uid) {
			return
		}
		c.loggedIn = true
		c.child = ev.Pid
		c.loginAt = at
		user := t.userName(ev.Uid)
		uid := ev.Uid
		c.session = &nodewardv1.Session{Id: c.id, Kind: nodewardv1.SessionKind_SESSION_KIND_SSH, User: user, Uid: uid,
			RemoteAddress: c.remote, RemotePort: c.rport}
		t.byChild[ev.Pid] = c
		t.remember(ev.Pid, pidSession{session: c.session, conn: c, at: at})
		if ev.Sessionid != unsetID {
			t.byAudit[ev.Sessionid] = c
		}
		c.login = &nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGIN, SessionId: c.id, SshdPid: c.pid,
			RemoteAddress: c.remote, RemotePort: c.rport, LocalAddress: c.local, LocalPort: c.lport, User: user, Uid: &uid}
		if c.logged != nil {
			enrich(c.login, c.logged)
			t.releaseLogin(c)
			return
		}
		c.heldUntil = time.Now().Add(t.cfg.LoginHold)
		t.held[c] = true
	case 4: // exit
		if c := t.byChild[ev.Pid]; c != nil {
			delete(t.byChild, ev.Pid)
			t.emitFor(c, &nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGOUT, SessionId: c.id, SshdPid: c.pid,
				RemoteAddress: c.remote, RemotePort: c.rport, User: c.session.GetUser(), Uid: &c.session.Uid,
				Duration: durationpb.New(at.Sub(c.loginAt)), LoggedIn: true}, at)
		}
		if c := t.conns[ev.Pid]; c != nil {
			delete(t.conns, ev.Pid)
			c.closedAt = time.Now()
			closed := &nodewardv1.SshEvent{Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_CONNECTION_CLOSED, SessionId: c.id, SshdPid: c.pid,
				RemoteAddress: c.remote, RemotePort: c.rport, LocalAddress: c.local, LocalPort: c.lport,
				Duration: durationpb.New(at.Sub(c.accepted)), LoggedIn: c.loggedIn}
			if c.session != nil {
				closed.User = c.session.GetUser()
			}
			t.emitFor(c, closed, at)
			// The audit session stays mapped: processes left behind by the
			// session (nohup, daemons) still belong to it.
		}
	}
}

// emitFor sends a connection's event, or queues it behind the connection's
// held login.
func (t *Tracker) emitFor(c *conn, ev *nodewardv1.SshEvent, at time.Time) {
	if c.login != nil {
		c.after = append(c.after, &nodewardv1.Event{Time: timestamppb.New(at), Body: &nodewardv1.Event_Ssh{Ssh: ev}})
		return
	}
	t.emit(ev, at)
}

// releaseLogin sends a held login event now, and what queued behind it.
func (t *Tracker) releaseLogin(c *conn) {
	if c.login == nil {
		return
	}
	t.noteLogin(c.login, c.loginAt)
	t.emit(c.login, c.loginAt)
	c.login = nil
	delete(t.held, c)
	for _, ev := range c.after {
		t.out <- ev
	}
	c.after = nil
}

// releaseHeld sends the logins whose log line did not come in time, and
// forgets closed connections past the grace for late log lines.
func (t *Tracker) releaseHeld(all bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for c := range t.held {
		if all || now.After(c.heldUntil) {
			t.releaseLogin(c)
		}
	}
	for k, c := range t.byRemote {
		if !c.closedAt.IsZero() && now.Sub(c.closedAt) > logGrace {
			delete(t.byRemote, k)
		}
	}
	for pid, ps := range t.byPid {
		if ps.conn != nil && !ps.conn.closedAt.IsZero() && now.Sub(ps.conn.closedAt) > sessionLinger {
			delete(t.byPid, pid)
		}
	}
}

// enrich copies what only the log knows onto a kernel-side event.
func enrich(dst, logged *nodewardv1.SshEvent) {
	dst.AuthMethod = logged.GetAuthMethod()
	dst.KeyFingerprint = logged.GetKeyFingerprint()
	dst.Detail = logged.GetDetail()
}

func remoteKey(addr string, port uint32) string {
	return addr + " " + strconv.FormatUint(uint64(port), 10)
}

func (t *Tracker) execID(pid uint32, startTicks uint64) string {
	return tracer.ExecIDWith(tracer.ExecIDPrefix(t.cfg.NodeName, t.cfg.BootID), pid, startTicks)
}

func addr(family uint8, b [16]uint8) string {
	switch family {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(b[:4])).String()
	case unix.AF_INET6:
		return netip.AddrFrom16(b).Unmap().String()
	}
	return ""
}

// passwd returns the host's /etc/passwd entry fields for uid, or nil.
func (t *Tracker) passwd(uid uint32) []string {
	if t.cfg.Root == nil {
		return nil
	}
	b, err := t.cfg.Root.ReadFile("/etc/passwd", 8<<20)
	if err != nil {
		return nil
	}
	want := strconv.FormatUint(uint64(uid), 10)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 7 && f[2] == want {
			return f
		}
	}
	return nil
}

func (t *Tracker) userName(uid uint32) string {
	if f := t.passwd(uid); f != nil {
		return f[0]
	}
	return ""
}

// privsepUser reports whether uid is sshd's privilege separation user
// (Debian "sshd", Fedora/Amazon Linux "sshd", OpenBSD style "_sshd"), whose
// home is sshd's empty chroot.
func (t *Tracker) privsepUser(uid uint32) bool {
	f := t.passwd(uid)
	if f == nil {
		return false
	}
	switch f[5] {
	case "/run/sshd", "/var/run/sshd", "/var/empty", "/var/empty/sshd", "/usr/share/empty.sshd":
		return true
	}
	return f[0] == "sshd" || f[0] == "_sshd"
}

// bootToWall converts CLOCK_BOOTTIME nanoseconds to wall time.
func bootToWall(ktime uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Now()
	}
	now := time.Now()
	return now.Add(-time.Duration(ts.Nano() - int64(ktime)))
}
