package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/collector/store/postgres/pgtest"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startCollector runs serve in-process until the test ends and returns
// its gRPC address.
func startCollector(t *testing.T, o *serveOptions) string {
	t.Helper()
	if o.listen == "" {
		o.listen = freeAddr(t)
	}
	o.logLevel, o.logFormat, o.stopTimeout = "warn", "text", 5*time.Second
	if o.tailQueue == 0 {
		o.tailQueue = 1000
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", o.listen, time.Second)
		if err == nil {
			c.Close()
			return o.listen
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector did not listen on %s", o.listen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openTail(t *testing.T, ctx context.Context, addr string, req *nodewardv1.TailEventsRequest) nodewardv1.QueryService_TailEventsClient {
	t.Helper()
	conn, err := dialInsecure(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := nodewardv1.NewQueryServiceClient(conn).TailEvents(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatalf("tail: %v", err)
	}
	return stream
}

func sendEvents(t *testing.T, ctx context.Context, a *simAgent, seq uint64, evs ...*nodewardv1.Event) {
	t.Helper()
	a.seq = seq - 1
	if err := a.send(ctx, &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{Events: evs}}}, len(evs)); err != nil {
		t.Fatal(err)
	}
	if !a.drain(ctx, 10*time.Second) {
		t.Fatal("batch not acked")
	}
}

func execEvent(bin string, args ...string) *nodewardv1.Event {
	return &nodewardv1.Event{Time: timestamppb.Now(), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
		Process: &nodewardv1.Process{Filename: bin, Args: args, Uid: 1000, Pod: &nodewardv1.Pod{Name: "api-0", Namespace: "prod"}},
	}}}
}

// TestTwoReplicasTail runs two collectors on one PostgreSQL: an event an
// agent sends to replica A shows in a tail on replica B within a second,
// and B's queries see A's agent.
func TestTwoReplicasTail(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := startCollector(t, &serveOptions{store: dsn, replica: "replica-a"})
	b := startCollector(t, &serveOptions{store: dsn, replica: "replica-b"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tailB := openTail(t, ctx, b, &nodewardv1.TailEventsRequest{})
	agent, err := connectAgent(ctx, a, "ip-10-0-0-1.ec2.internal", 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.close()

	for i := range 3 {
		sent := time.Now()
		sendEvents(t, ctx, agent, uint64(i+1), execEvent("/usr/bin/curl", "curl", fmt.Sprintf("https://example.com/%d", i)))
		resp, err := tailB.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got := time.Since(sent)
		ev := resp.GetEvents()[0]
		if ev.GetNodeName() != "ip-10-0-0-1.ec2.internal" || ev.GetSequence() != uint64(i+1) {
			t.Fatalf("tail on B got %v", ev)
		}
		if got > time.Second {
			t.Fatalf("event reached replica B's tail after %s, want within 1s", got)
		}
		t.Logf("event %d: on replica B's tail %s after it was sent to replica A", i+1, got.Round(time.Millisecond))
	}
	// B answers queries about A's agent, connected included.
	conn, err := dialInsecure(b)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n, err := nodewardv1.NewQueryServiceClient(conn).GetNode(ctx, &nodewardv1.GetNodeRequest{Name: "ip-10-0-0-1.ec2.internal"})
	if err != nil {
		t.Fatal(err)
	}
	if !n.GetNode().GetConnected() || n.GetNode().GetLastSequence() != 3 {
		t.Fatalf("replica B sees node %v", n.GetNode())
	}
}

// TestTailFiltersMasksAndSequenceGaps checks the tail's allow and deny
// lists, its field mask, and that a hole in a node's sequence numbers
// shows as a gap.
func TestTailFiltersMasksAndSequenceGaps(t *testing.T) {
	addr := startCollector(t, &serveOptions{store: "sqlite:" + filepath.Join(t.TempDir(), "db")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tail := openTail(t, ctx, addr, &nodewardv1.TailEventsRequest{
		Allow:     []*nodewardv1.EventFilter{{Namespaces: []string{"prod"}, BinaryRegex: "^/usr/bin/"}},
		Deny:      []*nodewardv1.EventFilter{{ArgsRegex: "--quiet"}},
		FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"exec.process.filename"}},
	})
	agent, err := connectAgent(ctx, addr, "node-a", 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.close()
	sendEvents(t, ctx, agent, 1, execEvent("/usr/bin/curl", "curl", "x"), execEvent("/bin/sh", "sh"), execEvent("/usr/bin/wget", "wget", "--quiet"))
	sendEvents(t, ctx, agent, 2, execEvent("/usr/bin/id"))
	sendEvents(t, ctx, agent, 5, execEvent("/usr/bin/whoami")) // 3 and 4 never arrive

	var got []string
	for len(got) < 4 {
		resp, err := tail.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.GetEvents() {
			if g := ev.GetGap(); g != nil {
				got = append(got, fmt.Sprintf("gap %s %d..%d", ev.GetNodeName(), g.GetFromSequence(), g.GetToSequence()))
				continue
			}
			p := ev.GetExec().GetProcess()
			if len(p.GetArgs()) > 0 || p.GetPod() != nil {
				t.Fatalf("field mask not applied: %v", p)
			}
			got = append(got, p.GetFilename())
		}
	}
	want := "[/usr/bin/curl /usr/bin/id gap node-a 3..4 /usr/bin/whoami]"
	if fmt.Sprint(got) != want {
		t.Fatalf("tail got %v, want %v", got, want)
	}
}

// TestMetricsPromtool scrapes --metrics-listen after some ingest and has
// the real promtool check the exposition.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.Unavailable(t, "promtool not installed (apt-get install prometheus)")
	}
	maddr := freeAddr(t)
	addr := startCollector(t, &serveOptions{store: "sqlite:" + filepath.Join(t.TempDir(), "db"), metricsListen: maddr})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, err := connectAgent(ctx, addr, "node-a", 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.close()
	r := newRand()
	agent.seq = 0
	if err := agent.send(ctx, &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Snapshot{Snapshot: simSnapshot(r, "node-a")}}, 0); err != nil {
		t.Fatal(err)
	}
	sendEvents(t, ctx, agent, 2, execEvent("/usr/bin/curl"))
	openTail(t, ctx, addr, &nodewardv1.TailEventsRequest{})

	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"nodeward_agents_connected 1", "nodeward_ingest_events_total 1", "nodeward_tail_subscribers 1",
		`nodeward_ingest_messages_total{kind="snapshot",result="stored"} 1`, "nodeward_fleet_nodes 1",
		`nodeward_node_last_seen_timestamp_seconds{node="node-a"}`, `nodeward_fleet_findings_failing{severity="high"}`,
		`nodeward_node_posture_score{node="node-a"}`, "nodeward_ingest_ack_latency_seconds_bucket", "nodeward_store_operation_duration_seconds_bucket",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
