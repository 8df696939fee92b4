package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// collector gathers a running tracer's events for a test.
type collector struct {
	mu     sync.Mutex
	events []*nodewardv1.Event
	slow   time.Duration
}

func (c *collector) emit(ev *nodewardv1.Event) {
	if c.slow > 0 {
		time.Sleep(c.slow)
	}
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

func (c *collector) snapshot() []*nodewardv1.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// startTracer loads the tracer (skipping, or failing under CI, where eBPF
// cannot load) and returns it unstarted.
func startTracer(t *testing.T, cfg Config) *Tracer {
	t.Helper()
	testutil.RequirePrivileged(t)
	cfg.NodeName = "test-node"
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	cfg.BootID = strings.TrimSpace(string(boot))
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	tr, err := New(cfg)
	if err != nil {
		testutil.Unavailable(t, err.Error())
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func run(t *testing.T, tr *Tracer, c *collector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, c.emit) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

type oracle struct {
	pid  uint32
	code int
}

// TestExecWorkload runs 5,000 execs of known binaries with unique arguments
// from a shell running as nobody, and finds each one in the tracer's output
// with the pid, ppid, uid, filename, argv and exit code the shell itself saw.
func TestExecWorkload(t *testing.T) {
	const n = 5000
	testutil.RequirePrivileged(t)

	// A process started before the tracer reads /proc: it waits, then runs a
	// child once told to.
	early := exec.Command("/bin/sh", "-c", `read x; /bin/true "$x"`)
	earlyIn, err := early.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Started before Run, so the cache learns it only from /proc.
	if err := early.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = early.Process.Kill(); _ = early.Wait() })
	waitFor(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", early.Process.Pid))
		return strings.HasPrefix(string(b), "/bin/sh\x00")
	})

	tr := startTracer(t, Config{})
	c := &collector{}
	stop := run(t, tr, c)
	waitFor(t, 10*time.Second, func() bool { return tr.Cache().Len() > 0 })

	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	preMarker := "pre-" + token
	fmt.Fprintln(earlyIn, preMarker)

	// The workload: each iteration runs one known binary in the background
	// with unique arguments, and prints its pid ($!) and exit status as the
	// shell saw them.
	script := fmt.Sprintf(`i=0
while [ $i -lt %d ]; do
  case $((i %% 3)) in
    0) /bin/true "w-%s-$i" a ;;
    1) /bin/false "w-%s-$i" b ;;
    2) /bin/sh -c 'exit 3' "w-%s-$i" ;;
  esac &
  p=$!; wait $p; echo "$i $p $?"
  i=$((i+1))
done`, n, token, token, token)
	work := exec.Command("/bin/sh", "-c", script)
	work.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := work.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := work.Start(); err != nil {
		t.Fatal(err)
	}
	want := map[int]oracle{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var i, pid, code int
		if _, err := fmt.Sscan(sc.Text(), &i, &pid, &code); err != nil {
			t.Fatalf("workload line %q: %v", sc.Text(), err)
		}
		want[i] = oracle{uint32(pid), code}
	}
	if err := work.Wait(); err != nil {
		t.Fatalf("workload: %v", err)
	}
	if len(want) != n {
		t.Fatalf("workload ran %d execs, want %d", len(want), n)
	}
	parentPid := uint32(work.Process.Pid)

	type seen struct {
		exec *nodewardv1.Process
		exit *nodewardv1.ExitEvent
		par  *nodewardv1.Process
	}
	var got map[int]*seen
	var pre *nodewardv1.ExecEvent
	collect := func() bool {
		got = map[int]*seen{}
		byID := map[string]int{}
		pre = nil
		for _, ev := range c.snapshot() {
			if x := ev.GetExec(); x != nil {
				p := x.GetProcess()
				if slices.Contains(p.GetArgs(), preMarker) {
					pre = x
				}
				for _, a := range p.GetArgs() {
					if rest, ok := strings.CutPrefix(a, "w-"+token+"-"); ok {
						i, _ := strconv.Atoi(rest)
						got[i] = &seen{exec: p, par: x.GetParent()}
						byID[p.GetExecId()] = i
					}
				}
			}
			if x := ev.GetExit(); x != nil {
				if i, ok := byID[x.GetProcess().GetExecId()]; ok {
					got[i].exit = x
				}
			}
		}
		complete := 0
		for _, s := range got {
			if s.exit != nil {
				complete++
			}
		}
		return complete == n && pre != nil
	}
	waitFor(t, 30*time.Second, collect)
	stop()
	collect()

	counts, err := tr.Counts()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("counts: seen %v, ring buffer lost %v, queue lost %v", counts.Seen, counts.RingBufferLost, counts.QueueLost)
	bins := []string{"/bin/true", "/bin/false", "/bin/sh"}
	argv := func(i int) []string {
		w := fmt.Sprintf("w-%s-%d", token, i)
		switch i % 3 {
		case 0:
			return []string{"/bin/true", w, "a"}
		case 1:
			return []string{"/bin/false", w, "b"}
		}
		return []string{"/bin/sh", "-c", "exit 3", w}
	}
	bad := 0
	for i := 0; i < n; i++ {
		s, w := got[i], want[i]
		var problems []string
		switch {
		case s == nil:
			problems = append(problems, "no exec event")
		case s.exit == nil:
			problems = append(problems, "no exit event")
		default:
			p := s.exec
			if p.GetPid() != w.pid {
				problems = append(problems, fmt.Sprintf("pid %d, want %d", p.GetPid(), w.pid))
			}
			if p.GetPpid() != parentPid || s.par.GetPid() != parentPid || p.GetParentExecId() != s.par.GetExecId() {
				problems = append(problems, fmt.Sprintf("ppid %d (parent %v), want %d", p.GetPpid(), s.par.GetPid(), parentPid))
			}
			if p.GetUid() != 65534 || p.GetGid() != 65534 || p.GetEuid() != 65534 {
				problems = append(problems, fmt.Sprintf("uid/gid/euid %d/%d/%d, want 65534", p.GetUid(), p.GetGid(), p.GetEuid()))
			}
			if p.GetFilename() != bins[i%3] {
				problems = append(problems, fmt.Sprintf("filename %q, want %q", p.GetFilename(), bins[i%3]))
			}
			if !slices.Equal(p.GetArgs(), argv(i)) || p.GetArgsTruncated() {
				problems = append(problems, fmt.Sprintf("argv %q, want %q", p.GetArgs(), argv(i)))
			}
			if int(s.exit.GetExitCode()) != w.code || s.exit.GetSignal() != 0 {
				problems = append(problems, fmt.Sprintf("exit %d signal %d, want %d", s.exit.GetExitCode(), s.exit.GetSignal(), w.code))
			}
			if s.exit.GetProcess().GetPid() != w.pid {
				problems = append(problems, fmt.Sprintf("exit pid %d, want %d", s.exit.GetProcess().GetPid(), w.pid))
			}
		}
		if len(problems) > 0 {
			bad++
			if bad <= 10 {
				t.Errorf("exec %d: %s", i, strings.Join(problems, "; "))
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d execs wrong or missing", bad, n)
	}

	// The process that predates the tracer: its child's parent comes from
	// /proc, with its own ancestry (this test binary) above it.
	pp := pre.GetParent()
	if pp.GetPid() != uint32(early.Process.Pid) || !pp.GetFromProcfs() {
		t.Errorf("pre-existing parent = pid %d from_procfs %v, want pid %d from /proc", pp.GetPid(), pp.GetFromProcfs(), early.Process.Pid)
	}
	if !slices.Equal(pp.GetArgs(), []string{"/bin/sh", "-c", `read x; /bin/true "$x"`}) {
		t.Errorf("pre-existing parent argv = %q", pp.GetArgs())
	}
	if len(pre.GetAncestors()) == 0 || pre.GetAncestors()[0].GetPid() != uint32(os.Getpid()) {
		t.Errorf("pre-existing ancestry = %v, want this test (pid %d) first", pre.GetAncestors(), os.Getpid())
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cgroupMount returns where this host mounts hierarchy h (cgroup2, or the
// v1 memory controller), or "" if it does not.
func cgroupMount(t *testing.T, h hierarchy) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := parseCgroupMounts(f)
	if err != nil {
		t.Fatal(err)
	}
	return m[h]
}

// testCgroup makes a cgroup directory for a test and returns its path;
// processes left in it are killed at cleanup.
func testCgroup(t *testing.T, base, name string) string {
	t.Helper()
	if base == "" {
		testutil.Unavailable(t, "this host does not mount that cgroup hierarchy")
	}
	if _, err := os.Stat(base + "/cgroup.procs"); err != nil {
		testutil.Unavailable(t, "no cgroup hierarchy at "+base)
	}
	dir := base + "/" + name
	if err := os.MkdirAll(dir, 0o755); err != nil {
		testutil.Unavailable(t, "cannot create a cgroup: "+err.Error())
	}
	t.Cleanup(func() {
		// Remove leaf first; the processes are gone by now.
		for d := dir; d != base && strings.HasPrefix(d, base+"/"); d = d[:strings.LastIndexByte(d, '/')] {
			_ = os.Remove(d)
		}
	})
	return dir
}

func enterCgroup(t *testing.T, dir string, pid int) {
	t.Helper()
	if err := os.WriteFile(dir+"/cgroup.procs", []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatalf("move %d into %s: %v", pid, dir, err)
	}
}

// TestLossCountedExactly floods a ring buffer far too small for it while
// the reader is paused, then reads slowly through a small queue: every exec,
// fork and exit of the flood is either delivered or counted as lost, to
// the event.
func TestLossCountedExactly(t *testing.T) {
	const n = 3000
	testutil.RequirePrivileged(t)
	cg := testCgroup(t, cgroupMount(t, hierV2), fmt.Sprintf("nodeward-loss-%d", os.Getpid()))
	id, err := HostCgroupID(cg)
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB holds a few hundred events; the flood makes 9,000.
	tr := startTracer(t, Config{FilterCgroupID: id, RingBufferBytes: 64 << 10, QueueLen: 32, LossInterval: 50 * time.Millisecond})

	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	// The shell says it is ready before it joins the cgroup: Start returns
	// before the kernel reports the shell's own exec, which must not count.
	flood := exec.Command("/bin/sh", "-c", fmt.Sprintf(`echo ready
read x
i=0
while [ $i -lt %d ]; do /bin/true "f-%s-$i"; i=$((i+1)); done`, n, token))
	in, err := flood.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := flood.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("flood did not start: %q, %v", line, err)
	}
	enterCgroup(t, cg, flood.Process.Pid)
	fmt.Fprintln(in, "go")
	if err := flood.Wait(); err != nil {
		t.Fatalf("flood: %v", err)
	}

	// Only now start reading, and slowly, so the queue overflows too.
	c := &collector{slow: 200 * time.Microsecond}
	stop := run(t, tr, c)
	// The flood: n forks, n execs, n exits, and the shell's own exit.
	expect := map[string]uint64{"exec": n, "fork": n, "exit": n + 1}
	var last Counts
	defer func() {
		if t.Failed() {
			t.Logf("counters: seen %v, delivered %v, ring buffer lost %v, queue lost %v",
				last.Seen, last.Delivered, last.RingBufferLost, last.QueueLost)
		}
	}()
	waitFor(t, 30*time.Second, func() bool {
		k, err := tr.Counts()
		if err != nil {
			t.Fatal(err)
		}
		last = k
		for kind, want := range expect {
			if k.Seen[kind] != want || k.Delivered[kind]+k.QueueLost[kind]+k.RingBufferLost[kind] != want {
				return false
			}
		}
		return true
	})
	stop()

	delivered := map[string]uint64{}
	lostRB, lostQ := map[string]uint64{}, map[string]uint64{}
	for _, ev := range c.snapshot() {
		switch {
		case ev.GetExec() != nil:
			p := ev.GetExec().GetProcess()
			if len(p.GetArgs()) == 2 && strings.HasPrefix(p.GetArgs()[1], "f-"+token+"-") {
				delivered["exec"]++
			} else {
				t.Errorf("unexpected exec in the test's cgroup: %v", p.GetArgs())
			}
		case ev.GetExit() != nil:
			delivered["exit"]++
		case ev.GetLoss() != nil:
			l := ev.GetLoss()
			for k, v := range l.GetRingBufferByKind() {
				lostRB[k] += v
			}
			for k, v := range l.GetQueueByKind() {
				lostQ[k] += v
			}
		}
	}
	k, _ := tr.Counts()
	delivered["fork"] = k.Delivered["fork"] // forks feed the cache, they are not events
	t.Logf("delivered %v, ring buffer lost %v, queue lost %v", delivered, lostRB, lostQ)
	if lostRB["exec"] == 0 || lostQ["exec"] == 0 {
		t.Errorf("the flood should overflow both the ring buffer and the queue: ring buffer %d, queue %d", lostRB["exec"], lostQ["exec"])
	}
	for kind, want := range expect {
		if got := delivered[kind] + lostRB[kind] + lostQ[kind]; got != want {
			t.Errorf("%s: delivered %d + lost %d (ring buffer) + %d (queue) = %d, want exactly %d",
				kind, delivered[kind], lostRB[kind], lostQ[kind], got, want)
		}
	}
}

// TestUnprivilegedSaysWhy runs New as nobody, in a child process: it fails
// with ErrUnavailable and a reason a person can act on.
func TestUnprivilegedSaysWhy(t *testing.T) {
	if os.Getenv("NODEWARD_TRACER_CHILD") == "1" {
		_, err := New(Config{NodeName: "n", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			fmt.Println("loaded")
			return
		}
		fmt.Printf("unavailable=%v\n%v\n", errors.Is(err, ErrUnavailable), err)
		return
	}
	testutil.RequirePrivileged(t) // to drop privileges, first have them
	// The test binary's own directory is private to root: copy it where
	// nobody may run it.
	dir, err := os.MkdirTemp("", "nodeward-tracer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/tracer.test", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dir+"/tracer.test", "-test.run", "^TestUnprivilegedSaysWhy$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODEWARD_TRACER_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "unavailable=true") || !strings.Contains(string(out), "not permitted to load eBPF programs") {
		t.Errorf("unprivileged New said:\n%s", out)
	}
}

// TestShutdownDrains: events in the ring buffer when the tracer is told to
// stop are still delivered, not dropped with the reader.
func TestShutdownDrains(t *testing.T) {
	// Never woken, polling rarely: everything waits in the ring buffer.
	tr := startTracer(t, Config{WakeupBytes: 4 << 20, PollInterval: time.Hour})
	c := &collector{}
	stop := run(t, tr, c)
	time.Sleep(300 * time.Millisecond) // past the start-up /proc fill
	marker := "drain-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := exec.Command("/bin/true", marker).Run(); err != nil {
		t.Fatal(err)
	}
	stop()
	for _, ev := range c.snapshot() {
		if a := ev.GetExec().GetProcess().GetArgs(); len(a) == 2 && a[1] == marker {
			return
		}
	}
	t.Errorf("the exec of %s, still in the ring buffer at shutdown, was not delivered", marker)
}

// TestLongArgvAndDeepCwd: argv past the bound is cut and flagged; a cwd
// deeper than the BPF walk is cut at the root end and marked.
func TestLongArgvAndDeepCwd(t *testing.T) {
	tr := startTracer(t, Config{})
	c := &collector{}
	stop := run(t, tr, c)

	marker := "long-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	big := strings.Repeat("x", 3000)
	deep := t.TempDir()
	for i := 0; i < 30; i++ {
		deep += fmt.Sprintf("/d%02d", i)
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/true", marker, big, big)
	cmd.Dir = deep
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	var p *nodewardv1.Process
	waitFor(t, 10*time.Second, func() bool {
		for _, ev := range c.snapshot() {
			if a := ev.GetExec().GetProcess().GetArgs(); len(a) > 1 && a[1] == marker {
				p = ev.GetExec().GetProcess()
				return true
			}
		}
		return false
	})
	stop()
	// The first three arguments fit; the fourth is cut inside.
	a := p.GetArgs()
	if !p.GetArgsTruncated() || len(a) != 4 || a[2] != big || len(a[3]) >= len(big) || !strings.HasPrefix(big, a[3]) {
		t.Errorf("argv: truncated %v, %d args", p.GetArgsTruncated(), len(a))
	}
	if n := len(strings.Join(p.GetArgs(), "\x00")); n > 4096 {
		t.Errorf("argv carries %d bytes, over the 4096 bound", n)
	}
	if !strings.HasPrefix(p.GetCwd(), "…/") || !strings.HasSuffix(deep, strings.TrimPrefix(p.GetCwd(), "…")) {
		t.Errorf("cwd %q, want a marked tail of %q", p.GetCwd(), deep)
	}
}
