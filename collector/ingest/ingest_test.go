package ingest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nodeward/nodeward/collector/hub"
	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/sqlite"
	"github.com/nodeward/nodeward/internal/auth"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// gatedStore is a real SQLite store whose event commits wait for the test
// and can be made to fail once: fault injection around the real thing.
type gatedStore struct {
	store.Store
	entered chan uint64
	release chan error
}

func (g *gatedStore) CommitEvents(ctx context.Context, node string, seq uint64, events []*nodewardv1.Event, wire [][]byte, received time.Time) (bool, error) {
	g.entered <- seq
	if err := <-g.release; err != nil {
		return false, err
	}
	return g.Store.CommitEvents(ctx, node, seq, events, wire, received)
}

func startIngest(t *testing.T, st store.Store, pub Publisher) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Open on loopback, as the collector runs with no credentials set.
	srv := grpc.NewServer(append(auth.Open(slog.New(slog.DiscardHandler)).ServerOptions(), ServerCodec())...)
	nodewardv1.RegisterAgentServiceServer(srv, New(st, slog.New(slog.DiscardHandler), "test", pub, nil))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

// connect opens an agent stream for node and returns it with the
// collector's last stored sequence.
func connect(t *testing.T, addr, node string) (nodewardv1.AgentService_ConnectClient, uint64) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := nodewardv1.NewAgentServiceClient(conn).Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Hello{Hello: &nodewardv1.Hello{NodeName: node}}}); err != nil {
		t.Fatal(err)
	}
	w, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return stream, w.GetWelcome().GetLastStoredSequence()
}

func sendExec(t *testing.T, stream nodewardv1.AgentService_ConnectClient, seq uint64, bin string) {
	t.Helper()
	ev := &nodewardv1.Event{Time: timestamppb.Now(), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: &nodewardv1.Process{Filename: bin}}}}
	if err := stream.Send(&nodewardv1.ConnectRequest{Sequence: seq, Payload: &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{Events: []*nodewardv1.Event{ev}}}}); err != nil {
		t.Fatal(err)
	}
}

func nextBatch(t *testing.T, sub *hub.Subscriber) *hub.Batch {
	t.Helper()
	select {
	case b := <-sub.C:
		sub.Done(len(b.Events))
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("the tail received nothing")
		return nil
	}
}

// A tail sees a batch while its commit is still running; a batch whose
// commit failed is sent again by the agent, stored, and shown only once;
// a replay of what was stored before the stream opened is not shown again.
func TestTailSeesBatchBeforeCommitAndOnce(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gate := &gatedStore{Store: st, entered: make(chan uint64, 1), release: make(chan error, 1)}
	h := hub.New(100)
	sub := h.Subscribe()
	defer sub.Close()
	addr := startIngest(t, gate, h)

	stream, last := connect(t, addr, "node-a")
	if last != 0 {
		t.Fatalf("new node's last stored sequence = %d", last)
	}
	sendExec(t, stream, 1, "/bin/one")
	<-gate.entered
	if b := nextBatch(t, sub); b.Events[0].GetExec().GetProcess().GetFilename() != "/bin/one" || b.Events[0].GetSequence() != 1 {
		t.Fatalf("tail got %v while the commit was held, want /bin/one seq 1", b.Events)
	}
	gate.release <- nil
	if ack, err := stream.Recv(); err != nil || ack.GetAck().GetSequence() != 1 {
		t.Fatalf("ack = %v, %v; want sequence 1", ack, err)
	}

	// The commit of sequence 2 fails: not acked, the stream ends.
	sendExec(t, stream, 2, "/bin/two")
	<-gate.entered
	gate.release <- errors.New("disk full")
	if ack, err := stream.Recv(); err == nil {
		t.Fatalf("failed commit acked: %v", ack)
	}
	if b := nextBatch(t, sub); b.Events[0].GetSequence() != 2 {
		t.Fatalf("tail got %v, want sequence 2", b.Events)
	}

	// The agent reconnects and sends 2 again, then replays stored 1
	// (numbered at or below the last stored sequence): stored once, shown once.
	stream, last = connect(t, addr, "node-a")
	if last != 1 {
		t.Fatalf("last stored sequence = %d, want 1", last)
	}
	sendExec(t, stream, 2, "/bin/two")
	<-gate.entered
	gate.release <- nil
	if ack, err := stream.Recv(); err != nil || ack.GetAck().GetSequence() != 2 || ack.GetAck().GetDuplicate() {
		t.Fatalf("ack = %v, %v; want sequence 2 stored", ack, err)
	}
	sendExec(t, stream, 1, "/bin/one")
	<-gate.entered
	gate.release <- nil
	if ack, err := stream.Recv(); err != nil || !ack.GetAck().GetDuplicate() {
		t.Fatalf("ack = %v, %v; want sequence 1 acked as a duplicate", ack, err)
	}
	select {
	case b := <-sub.C:
		t.Fatalf("tail shown a batch again: %v", b.Events)
	case <-time.After(200 * time.Millisecond):
	}
	res, err := st.QueryEvents(t.Context(), &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{NodeNames: []string{"node-a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetEvents()) != 2 {
		t.Fatalf("store holds %d events, want 2: %v", len(res.GetEvents()), res.GetEvents())
	}
}
