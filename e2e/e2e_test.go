// Package e2e runs the real nodeward and nodeward-agent binaries against
// each other over loopback.
package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite"
)

// proc is a running binary whose JSON log lines can be awaited.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	cond  *sync.Cond
	done  chan struct{}
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	p := &proc{t: t, cmd: cmd, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			_ = json.Unmarshal(sc.Bytes(), &m)
			p.mu.Lock()
			p.raw = append(p.raw, sc.Text())
			if m != nil {
				p.lines = append(p.lines, m)
			}
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		_ = cmd.Wait()
		close(p.done)
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not stop on SIGTERM", p.cmd.Path)
		p.kill()
	}
}

// await waits for a log line whose msg is msg and returns it.
func (p *proc) await(msg string, timeout time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := 0
	for {
		for ; seen < len(p.lines); seen++ {
			if p.lines[seen]["msg"] == msg {
				return p.lines[seen]
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before logging %q:\n%s", p.cmd.Path, msg, strings.Join(p.raw, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q within %s:\n%s", p.cmd.Path, msg, timeout, strings.Join(p.raw, "\n"))
		}
		p.cond.Wait()
	}
}

// logged returns every log line with msg so far.
func (p *proc) logged(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, l := range p.lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

type binaries struct{ collector, agent string }

func build(t *testing.T) binaries {
	t.Helper()
	return binaries{
		collector: testutil.BuildBinary(t, "./collector", "nodeward"),
		agent:     testutil.BuildBinary(t, "./agent", "nodeward-agent"),
	}
}

// serve starts a collector on a kernel-chosen loopback port (or addr) and
// returns it with the address it listens on.
func serve(t *testing.T, bin binaries, dbPath, addr string) (*proc, string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	p := start(t, bin.collector, "serve", "--listen", addr, "--store", "sqlite:"+dbPath, "--log-format", "json")
	l := p.await("collector serving", 30*time.Second)
	return p, fmt.Sprint(l["listen"])
}

// cli runs a client verb and returns stdout, stderr and the exit code.
func cli(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s %v: %v", bin, args, err)
	}
	return out.String(), errb.String(), code
}

// getNode asks the collector for a node with `nodeward node NAME -o json`.
func getNode(t *testing.T, bin binaries, server, name string) (map[string]any, bool) {
	t.Helper()
	out, _, code := cli(t, bin.collector, "node", name, "-o", "json", "--server", server)
	if code != 0 {
		return nil, false
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("node -o json printed invalid JSON %q: %v", out, err)
	}
	return m, true
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(m map[string]any, path ...string) any {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

// openStore opens the collector's SQLite database read-only, to check what
// it stored once it has stopped; it is closed when t ends.
func openStore(t *testing.T, db string) *sql.DB {
	t.Helper()
	store, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// storedEvents decodes every event the collector stored for node.
func storedEvents(t *testing.T, store *sql.DB, node string) []*nodewardv1.Event {
	t.Helper()
	rows, err := store.Query(`SELECT body FROM events WHERE node = ?`, node)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var evs []*nodewardv1.Event
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			t.Fatal(err)
		}
		ev := &nodewardv1.Event{}
		if err := proto.Unmarshal(body, ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}
