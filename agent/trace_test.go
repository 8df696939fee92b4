package main

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(l.b.String(), "\n")
}

// traceUntil runs `trace` with opts, execs a marked command once it runs,
// and returns the output lines that mention the marker.
func traceUntil(t *testing.T, o *traceOptions, wantLines int) []string {
	t.Helper()
	testutil.RequirePrivileged(t)
	o.host.proc, o.nodeName, o.ringBuffer, o.logLevel = "/proc", "test-node", 1<<20, "error"
	marker := "trace-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runTrace(ctx, out, o) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !t.Skipped() {
			t.Errorf("trace: %v", err)
		}
	}()
	var got []string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			testutil.Unavailable(t, "trace could not run: "+err.Error())
		default:
		}
		if err := exec.Command("/bin/echo", marker, "--password=hunter2").Run(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		got = got[:0]
		for _, l := range out.lines() {
			if strings.Contains(l, marker) || (strings.Contains(l, " exit ") && strings.Contains(l, "/bin/echo")) {
				got = append(got, l)
			}
		}
		if len(got) >= wantLines {
			return got
		}
	}
	t.Fatalf("trace printed %d lines about %s, want %d", len(got), marker, wantLines)
	return nil
}

func TestTraceJSONExecOnly(t *testing.T) {
	lines := traceUntil(t, &traceOptions{output: "json", types: []string{"exec"}}, 1)
	for _, l := range lines {
		var ev nodewardv1.Event
		if err := protojson.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("not an event: %v: %s", err, l)
		}
		p := ev.GetExec().GetProcess()
		if p == nil {
			t.Fatalf("--type exec printed a %T", ev.GetBody())
		}
		if p.GetFilename() != "/bin/echo" || len(p.GetArgs()) != 3 || p.GetArgs()[2] != "--password=****" {
			t.Errorf("exec = %s %q, want /bin/echo with the password masked", p.GetFilename(), p.GetArgs())
		}
		if ev.GetExec().GetParent().GetPid() == 0 || ev.GetNodeName() != "test-node" || p.GetExecId() == "" {
			t.Errorf("event lacks parent, node or exec id: %s", l)
		}
	}
}

func TestTraceCompact(t *testing.T) {
	lines := traceUntil(t, &traceOptions{output: "compact", types: []string{"exec", "exit", "loss"}}, 2)
	var execs, exits int
	for _, l := range lines {
		switch {
		case strings.Contains(l, " exec ") && strings.Contains(l, "/bin/echo") && strings.Contains(l, "--password=****"):
			execs++
		case strings.Contains(l, " exit ") && strings.Contains(l, "code=0"):
			exits++
		}
	}
	if execs == 0 || exits == 0 {
		t.Errorf("want exec and exit lines, got:\n%s", strings.Join(lines, "\n"))
	}
}

func TestTraceRejectsBadFlags(t *testing.T) {
	for _, o := range []*traceOptions{
		{output: "yaml", types: []string{"exec"}, logLevel: "warn"},
		{output: "json", types: []string{"fork"}, logLevel: "warn"},
		{output: "json", types: []string{"exec"}, logLevel: "warn", redact: []string{"("}},
	} {
		if err := runTrace(context.Background(), &bytes.Buffer{}, o); err == nil {
			t.Errorf("runTrace(%+v): no error", o)
		}
	}
}
