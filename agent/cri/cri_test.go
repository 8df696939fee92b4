package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/inventory"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/agent/tracer"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRealContainerd runs a pod in a real containerd through the CRI API
// and checks that the client names it, and that an exec inside the
// container, traced with eBPF, carries the pod's name and namespace.
func TestRealContainerd(t *testing.T) {
	ctd := startContainerd(t)
	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	p := ctd.runPod(t, "web-"+token, "team-"+token, "app")

	root, err := hostfs.Open(ctd.host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Close() })
	// Discovered under the host root, not configured.
	client := New(Config{Root: root, MinRefresh: 50 * time.Millisecond, Log: testLog(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	t.Run("client", func(t *testing.T) {
		// The first lookup may miss; it schedules the refresh that names it.
		var got *nodewardv1.Pod
		waitFor(t, 10*time.Second, func() bool {
			var ok bool
			got, ok = client.Lookup(p.containerID)
			return ok
		})
		want := &nodewardv1.Pod{Uid: p.uid, Name: p.name, Namespace: p.namespace, ContainerName: p.container}
		if !equalPod(got, want) {
			t.Errorf("Lookup(container) = %v, want %v", got, want)
		}
		sb, ok := client.Lookup(p.sandboxID)
		want.ContainerName = ""
		if !ok || !equalPod(sb, want) {
			t.Errorf("Lookup(sandbox) = %v, %v; want %v", sb, ok, want)
		}
		if r := client.Unreachable(); r != "" {
			t.Errorf("Unreachable() = %q with a running containerd", r)
		}
		// An id the runtime does not know misses, and is not asked about
		// again on every event.
		unknown := strings.Repeat("ab", 32)
		if _, ok := client.Lookup(unknown); ok {
			t.Fatal("Lookup(unknown id) hit")
		}
		waitFor(t, 5*time.Second, func() bool {
			client.mu.Lock()
			defer client.mu.Unlock()
			_, ok := client.absent[unknown]
			return ok
		})
		settled := client.Refreshes()
		for range 100 {
			client.Lookup(unknown)
		}
		time.Sleep(300 * time.Millisecond)
		if n := client.Refreshes() - settled; n > 0 {
			t.Errorf("%d refreshes for an id the runtime had already said it does not know", n)
		}
	})

	t.Run("traced exec", func(t *testing.T) {
		testutil.RequirePrivileged(t)
		boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		tr, err := tracer.New(tracer.Config{
			NodeName: "test-node",
			BootID:   strings.TrimSpace(string(boot)),
			Proc:     "/proc",
			Pods:     client,
			Log:      testLog(t),
		})
		if err != nil {
			testutil.Unavailable(t, "eBPF tracer: "+err.Error())
		}
		t.Cleanup(func() { _ = tr.Close() })
		var (
			mu     sync.Mutex
			events []*nodewardv1.Event
		)
		tctx, tcancel := context.WithCancel(context.Background())
		tdone := make(chan error, 1)
		go func() {
			tdone <- tr.Run(tctx, func(ev *nodewardv1.Event) {
				if ev.GetExec() == nil {
					return
				}
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			})
		}()
		defer func() {
			tcancel()
			if err := <-tdone; err != nil {
				t.Errorf("tracer Run: %v", err)
			}
		}()
		waitFor(t, 10*time.Second, func() bool { return tr.Cache().Len() > 0 })

		marker := "marker-" + token
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := ctd.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: p.containerID, Cmd: []string{"/sleeper", "echo", marker}, Timeout: 20})
		if err != nil {
			t.Fatalf("ExecSync: %v\n%s", err, ctd.log())
		}
		if res.GetExitCode() != 0 || strings.TrimSpace(string(res.GetStdout())) != marker {
			t.Fatalf("ExecSync: exit %d, stdout %q, stderr %q", res.GetExitCode(), res.GetStdout(), res.GetStderr())
		}
		var proc *nodewardv1.Process
		waitFor(t, 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range events {
				if pr := ev.GetExec().GetProcess(); slices.Contains(pr.GetArgs(), marker) {
					proc = pr
					return true
				}
			}
			return false
		})
		if proc.GetFilename() != "/sleeper" {
			t.Errorf("filename = %q, want /sleeper", proc.GetFilename())
		}
		if proc.GetContainerId() != p.containerID {
			t.Errorf("container id = %q (cgroup %q), want %q", proc.GetContainerId(), proc.GetCgroupPath(), p.containerID)
		}
		want := &nodewardv1.Pod{Uid: p.uid, Name: p.name, Namespace: p.namespace, ContainerName: p.container}
		if !equalPod(proc.GetPod(), want) {
			t.Errorf("pod = %v, want %v", proc.GetPod(), want)
		}
	})

	t.Run("ports", func(t *testing.T) {
		// The container's listener is in the node's network namespace; the
		// ports source names its pod.
		env := &source.Env{Root: root, Proc: "/proc", Pods: client}
		var found *nodewardv1.ListeningPort
		waitFor(t, 10*time.Second, func() bool {
			inv, err := inventory.ScanPorts(context.Background(), env)
			if err != nil {
				t.Logf("ScanPorts: %v", err)
			}
			for _, port := range inv.GetPorts() {
				if port.GetContainerId() == p.containerID {
					found = port
					return true
				}
			}
			return false
		})
		if found.GetExe() != "/sleeper" || found.GetPodUid() != p.uid {
			t.Errorf("port %d: exe %q pod uid %q, want /sleeper %s", found.GetPort(), found.GetExe(), found.GetPodUid(), p.uid)
		}
		want := &nodewardv1.Pod{Uid: p.uid, Name: p.name, Namespace: p.namespace, ContainerName: p.container}
		if !equalPod(found.GetPod(), want) {
			t.Errorf("port %d: pod %v, want %v", found.GetPort(), found.GetPod(), want)
		}
	})

	t.Run("trace command", func(t *testing.T) {
		// The agent's own command, with the socket configured through the
		// host's /var/run link.
		bin := testutil.BuildBinary(t, "./agent", "nodeward-agent")
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, bin, "trace", "-o", "json", "--type", "exec", "--root", ctd.host,
			"--cri-socket", "/var/run/containerd/containerd.sock", "--node-name", "test-node", "--log-level", "info")
		out, stderr := &lockedBuffer{}, &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cancel()
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("trace stderr:\n%s", stderr.String())
			}
		}()
		waitFor(t, 15*time.Second, func() bool { return strings.Contains(stderr.String(), "pods get names") })

		marker := "cmd-marker-" + token
		var got tracedExec
		waitFor(t, 15*time.Second, func() bool {
			ectx, ecancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ecancel()
			if _, err := ctd.rt.ExecSync(ectx, &runtimeapi.ExecSyncRequest{ContainerId: p.containerID, Cmd: []string{"/sleeper", "echo", marker}, Timeout: 5}); err != nil {
				t.Fatalf("ExecSync: %v", err)
			}
			time.Sleep(300 * time.Millisecond)
			for _, line := range strings.Split(out.String(), "\n") {
				if !strings.Contains(line, marker) {
					continue
				}
				if err := json.Unmarshal([]byte(line), &got); err != nil {
					t.Fatalf("trace printed %q: %v", line, err)
				}
				return true
			}
			return false
		})
		pod := got.Exec.Process.Pod
		if pod.UID != p.uid || pod.Name != p.name || pod.Namespace != p.namespace || pod.ContainerName != p.container {
			t.Errorf("trace printed pod %+v, want uid %s name %s namespace %s container %s", pod, p.uid, p.name, p.namespace, p.container)
		}
	})

	t.Run("runtime restart", func(t *testing.T) {
		// The runtime goes away (the pods run on) and comes back: the client
		// notices, keeps what it knew meanwhile, and asks again.
		ctd.halt(t)
		kick := 0
		miss := func() {
			kick++ // a fresh unknown id each time, so each one asks
			client.Lookup(strings.Repeat("cd", 31) + strconv.Itoa(10+kick%90))
		}
		waitFor(t, 10*time.Second, func() bool { miss(); return client.Unreachable() != "" })
		if _, ok := client.Lookup(p.containerID); !ok {
			t.Error("the cache forgot a running container while the runtime was away")
		}
		ctd.launch(t)
		before := client.Refreshes()
		waitFor(t, 10*time.Second, func() bool { miss(); return client.Unreachable() == "" && client.Refreshes() > before })
		got, ok := client.Lookup(p.containerID)
		want := &nodewardv1.Pod{Uid: p.uid, Name: p.name, Namespace: p.namespace, ContainerName: p.container}
		if !ok || !equalPod(got, want) {
			t.Errorf("after the restart: Lookup = %v, %v; want %v", got, ok, want)
		}
	})
}

// tracedExec is the part of `trace -o json` output the test reads.
type tracedExec struct {
	Exec struct {
		Process struct {
			Args []string `json:"args"`
			Pod  struct {
				UID           string `json:"uid"`
				Name          string `json:"name"`
				Namespace     string `json:"namespace"`
				ContainerName string `json:"container_name"`
			} `json:"pod"`
		} `json:"process"`
	} `json:"exec"`
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestUnreachableSaysSoOnce points the client at a socket nobody serves and
// at a host root with none: every lookup misses at once, the reason is
// kept, and the warning is logged once however often it retries.
func TestUnreachableSaysSoOnce(t *testing.T) {
	dir := t.TempDir()
	root, err := hostfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, tc := range []struct{ name, socket, reason string }{
		{"none found", "", "no CRI socket found"},
		{"configured, missing", "/run/containerd/containerd.sock", "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &countHandler{}
			c := New(Config{Root: root, Socket: tc.socket, TTL: 20 * time.Millisecond, MinRefresh: time.Millisecond, Log: slog.New(logs)})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			waitFor(t, 5*time.Second, func() bool { return strings.Contains(c.Unreachable(), tc.reason) })
			// Run closes it just after storing the reason.
			select {
			case <-c.Synced():
			case <-time.After(5 * time.Second):
				t.Error("Synced() not closed after the runtime was found unreachable")
			}
			for i := range 50 {
				start := time.Now()
				if _, ok := c.Lookup(strconv.Itoa(i)); ok {
					t.Fatal("lookup hit without a runtime")
				}
				if d := time.Since(start); d > 250*time.Millisecond {
					t.Errorf("a lookup took %v without a runtime", d)
				}
			}
			time.Sleep(200 * time.Millisecond) // several TTLs of retries
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v, want nil when the context ends", err)
			}
			if n := logs.warnings(); n != 1 {
				t.Errorf("%d warnings about the unreachable runtime, want 1", n)
			}
		})
	}
}

// TestDiscover finds a real listening socket under a host root, through
// the /var/run link as a configured path, and refuses what is not a socket.
func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"run/crio", "run/containerd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	// An absolute link, as on hosts: it must resolve inside the root.
	if err := os.Symlink("/run", filepath.Join(dir, "var/run")); err != nil {
		t.Fatal(err)
	}
	// A regular file where containerd's socket would be: not a socket.
	if err := os.WriteFile(filepath.Join(dir, "run/containerd/containerd.sock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "run/crio/crio.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	root, err := hostfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	want := filepath.Join(dir, "run/crio/crio.sock")
	if got, err := Discover(root, "", DefaultSockets); err != nil || got != want {
		t.Errorf("Discover = %q, %v; want %q", got, err, want)
	}
	if got, err := Discover(root, "/var/run/crio/crio.sock", DefaultSockets); err != nil || got != want {
		t.Errorf("Discover(/var/run/crio/crio.sock) = %q, %v; want %q", got, err, want)
	}
	if _, err := Discover(root, "/run/containerd/containerd.sock", DefaultSockets); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Discover(a regular file) error = %v, want not a socket", err)
	}
	if _, err := Discover(root, "", []string{"/run/containerd/containerd.sock", "/run/k3s/containerd/containerd.sock"}); err == nil {
		t.Error("Discover found a socket among a regular file and a missing path")
	}
}

// TestBuild maps containers through their sandbox, falls back to the
// kubelet's labels when the sandbox was not listed, and stays bounded.
func TestBuild(t *testing.T) {
	sbs := []*runtimeapi.PodSandbox{
		{Id: "sb1", Metadata: &runtimeapi.PodSandboxMetadata{Name: "web-0", Uid: "u1", Namespace: "shop"}},
	}
	cs := []*runtimeapi.Container{
		{Id: "c1", PodSandboxId: "sb1", Metadata: &runtimeapi.ContainerMetadata{Name: "nginx"}},
		{Id: "c2", PodSandboxId: "sb-gone", Metadata: &runtimeapi.ContainerMetadata{Name: "worker"},
			Labels: map[string]string{labelPodName: "job-1", labelPodNamespace: "batch", labelPodUID: "u2"}},
	}
	m, truncated := build(sbs, cs, 10)
	if truncated || len(m) != 3 {
		t.Fatalf("build: %d entries, truncated %v; want 3, false", len(m), truncated)
	}
	for id, want := range map[string]*nodewardv1.Pod{
		"sb1": {Uid: "u1", Name: "web-0", Namespace: "shop"},
		"c1":  {Uid: "u1", Name: "web-0", Namespace: "shop", ContainerName: "nginx"},
		"c2":  {Uid: "u2", Name: "job-1", Namespace: "batch", ContainerName: "worker"},
	} {
		if !equalPod(m[id], want) {
			t.Errorf("%s: %v, want %v", id, m[id], want)
		}
	}
	if m, truncated := build(sbs, cs, 2); !truncated || len(m) != 2 {
		t.Errorf("build bounded to 2: %d entries, truncated %v", len(m), truncated)
	}
}

func equalPod(a, b *nodewardv1.Pod) bool {
	return a.GetUid() == b.GetUid() && a.GetName() == b.GetName() && a.GetNamespace() == b.GetNamespace() && a.GetContainerName() == b.GetContainerName()
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// countHandler counts the warnings logged.
type countHandler struct {
	mu sync.Mutex
	n  int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
	}
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }
func (h *countHandler) warnings() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// TestHungRuntimeNeverBlocksLookups serves a socket that accepts
// connections and never answers, as a wedged runtime does: every call
// times out in Run, while lookups return at once.
func TestHungRuntimeNeverBlocksLookups(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "run/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "run/containerd/containerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read from or answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	root, err := hostfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	c := New(Config{Root: root, Timeout: 300 * time.Millisecond, MinRefresh: time.Millisecond, Log: testLog(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var worst time.Duration
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		start := time.Now()
		if _, ok := c.Lookup(strconv.Itoa(i)); ok {
			t.Fatal("lookup hit on a runtime that never answers")
		}
		worst = max(worst, time.Since(start))
		time.Sleep(time.Millisecond)
	}
	// Far below the hung call's 300 ms, yet above a busy machine's stalls.
	if worst > 100*time.Millisecond {
		t.Errorf("slowest lookup took %v while the runtime hung", worst)
	}
	if r := c.Unreachable(); !strings.Contains(r, "DeadlineExceeded") && !strings.Contains(r, "deadline exceeded") {
		t.Errorf("Unreachable() = %q, want a deadline", r)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop when its context ended, with a call in flight")
	}
}

// BenchmarkLookup is the cost the tracer pays per exec in a container: a
// hit in a cache of 10,000 containers, and a miss on an id the runtime
// already said it does not know.
func BenchmarkLookup(b *testing.B) {
	c := New(Config{})
	m := map[string]*nodewardv1.Pod{}
	for i := range 10000 {
		m[fmt.Sprintf("%064x", i)] = &nodewardv1.Pod{Uid: strconv.Itoa(i), Name: "p", Namespace: "ns", ContainerName: "c"}
	}
	c.snap.Store(&m)
	hit := fmt.Sprintf("%064x", 4242)
	miss := strings.Repeat("f", 64)
	c.Lookup(miss)
	c.forgetMisses(time.Now()) // as a refresh that did not find it would
	b.Run("hit", func(b *testing.B) {
		for b.Loop() {
			if _, ok := c.Lookup(hit); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("known-absent", func(b *testing.B) {
		for b.Loop() {
			if _, ok := c.Lookup(miss); ok {
				b.Fatal("hit")
			}
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Lookup(hit)
			}
		})
	})
}
