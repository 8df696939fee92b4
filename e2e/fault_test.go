package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/sender"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// blackhole is a TCP relay between agents and the collector that can cut
// the path the way a downed link does: packets stop, nobody is told.
type blackhole struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	go b.accept()
	t.Cleanup(func() { ln.Close(); b.dropAll() })
	return b
}

func (b *blackhole) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		if b.cut.Load() {
			// A SYN through a dead link gets no answer: hold it open, silent.
			b.track(c)
			continue
		}
		up, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.track(c, up)
		go b.pipe(c, up)
		go b.pipe(up, c)
	}
}

func (b *blackhole) track(cs ...net.Conn) {
	b.mu.Lock()
	b.conns = append(b.conns, cs...)
	b.mu.Unlock()
}

// pipe copies while the link is up; while it is cut, bytes are swallowed.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// dropAll closes every relayed connection (after a cut is healed, the old
// connections are dead anyway, as they would be after TCP gave up).
func (b *blackhole) dropAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

// TestFaultsLoseNothing streams 100,000 events from 10 agents (the real
// sender with an on-disk spool, over real gRPC) to the real collector binary
// while the collector is SIGKILLed and restarted 5 times and the network is
// cut twice; afterwards every event is stored exactly once and every node's
// sequences are dense.
func TestFaultsLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("long fault test")
	}
	bin := build(t)
	db := filepath.Join(t.TempDir(), "nodeward.db")
	col, addr := serve(t, bin, db, "")
	link := newBlackhole(t, addr)

	const (
		agents        = 10
		perAgent      = 10_000
		batchSize     = 100
		produceWindow = 20 * time.Second
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := grpc.NewClient(link.ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	senders := make([]*sender.Sender, agents)
	var wg sync.WaitGroup
	for a := range agents {
		sp, err := sender.OpenSpool(filepath.Join(t.TempDir(), "spool"), 256<<20)
		if err != nil {
			t.Fatal(err)
		}
		s := sender.New(conn, sender.Config{
			NodeName:   fmt.Sprintf("fault-%02d", a),
			Queue:      sp,
			Heartbeat:  500 * time.Millisecond,
			AckTimeout: 2 * time.Second,
			BackoffMin: 50 * time.Millisecond,
			BackoffMax: 500 * time.Millisecond,
			Log:        quiet,
		})
		senders[a] = s
		wg.Go(func() { _ = s.Run(ctx) })
		// Producer: perAgent events, each with a unique (node, pid), spread
		// over the fault window.
		wg.Go(func() {
			pause := produceWindow / time.Duration(perAgent/batchSize)
			for b := 0; b < perAgent/batchSize; b++ {
				evs := make([]*nodewardv1.Event, batchSize)
				for i := range evs {
					evs[i] = &nodewardv1.Event{Time: timestamppb.Now(), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
						Process: &nodewardv1.Process{Pid: uint32(b*batchSize + i + 1), Filename: "/bin/true"},
					}}}
				}
				s.EnqueueEvents(evs)
				time.Sleep(pause)
			}
		})
	}

	// The faults, spread over the window while producers run.
	step := produceWindow / 8
	for i := 0; i < 7; i++ {
		time.Sleep(step)
		if i == 2 || i == 5 {
			link.cut.Store(true)
			time.Sleep(3 * time.Second)
			link.dropAll()
			link.cut.Store(false)
			t.Logf("network cut for 3s")
			continue
		}
		col.kill()
		col, _ = serve(t, bin, db, addr)
		t.Logf("collector killed and restarted")
	}

	waitFor(t, "every agent's queue to drain", 3*time.Minute, func() bool {
		for _, s := range senders {
			if _, pending, _ := s.Stats(); pending > 0 {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	for _, s := range senders {
		if _, _, lost := s.Stats(); lost != 0 {
			t.Errorf("a sender dropped %d events with a 256 MiB spool", lost)
		}
		s.Close()
	}
	col.stop()

	store := openStore(t, db)
	for a := range agents {
		node := fmt.Sprintf("fault-%02d", a)
		seen := make(map[uint32]int, perAgent)
		total := 0
		for _, ev := range storedEvents(t, store, node) {
			seen[ev.GetExec().GetProcess().GetPid()]++
			total++
		}
		if total != perAgent || len(seen) != perAgent {
			t.Errorf("%s: %d events stored, %d distinct; want %d exactly once", node, total, len(seen), perAgent)
		}
		var n, lo, hi int64
		if err := store.QueryRow(`SELECT COUNT(*), MIN(seq), MAX(seq) FROM sequences WHERE node = ?`, node).Scan(&n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		if lo != 1 || hi != n {
			t.Errorf("%s: sequences %d..%d with %d stored: a gap", node, lo, hi, n)
		}
	}
	_ = os.Remove(db)
}

// TestFullSpoolLossIsExact keeps the collector away until the agent's spool
// overflows, then lets it drain: the events missing from the store equal the
// loss the agent counted and reported in LossEvents, exactly, and the spool
// never outgrew its bound.
func TestFullSpoolLossIsExact(t *testing.T) {
	bin := build(t)
	db := filepath.Join(t.TempDir(), "nodeward.db")
	col, addr := serve(t, bin, db, "")
	link := newBlackhole(t, addr)
	link.cut.Store(true)

	const spoolMax = 2 << 20
	sp, err := sender.OpenSpool(filepath.Join(t.TempDir(), "spool"), spoolMax)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(link.ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const node = "spool-full"
	s := sender.New(conn, sender.Config{
		NodeName: node, Queue: sp, AckTimeout: time.Second,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()

	const batches, batchSize = 400, 100
	for b := 0; b < batches; b++ {
		evs := make([]*nodewardv1.Event, batchSize)
		for i := range evs {
			evs[i] = &nodewardv1.Event{Time: timestamppb.Now(), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
				Process: &nodewardv1.Process{Pid: uint32(b*batchSize + i + 1), Filename: "/usr/bin/some-long-binary-name", Args: []string{"--flag", "value"}},
			}}}
		}
		s.EnqueueEvents(evs)
		if sp.Bytes() > spoolMax {
			t.Fatalf("spool at %d bytes exceeds its %d bound", sp.Bytes(), spoolMax)
		}
	}
	_, _, lost := s.Stats()
	if lost == 0 {
		t.Fatal("the spool never overflowed; the test wrote too little")
	}
	link.dropAll()
	link.cut.Store(false)
	waitFor(t, "the spool to drain", 2*time.Minute, func() bool {
		_, pending, _ := s.Stats()
		return pending == 0
	})
	cancel()
	<-done
	s.Close()
	col.stop()

	store := openStore(t, db)
	var stored, reported uint64
	for _, ev := range storedEvents(t, store, node) {
		if l := ev.GetLoss(); l != nil {
			reported += l.GetSpool()
			continue
		}
		stored++
	}
	produced := uint64(batches * batchSize)
	missing := produced - stored
	t.Logf("produced %d, stored %d, missing %d, agent counted %d lost, LossEvents in the store say %d", produced, stored, missing, lost, reported)
	if missing != lost {
		t.Errorf("missing %d events but the agent counted %d lost", missing, lost)
	}
	if reported != lost {
		t.Errorf("LossEvents in the store report %d, the agent counted %d", reported, lost)
	}
}

// TestFastAgentIsSlowedNotDropped sends events far faster than the
// collector's per-agent rate allows: the agent is held back (delivery takes
// as long as the rate says) and every event is stored.
func TestFastAgentIsSlowedNotDropped(t *testing.T) {
	bin := build(t)
	db := filepath.Join(t.TempDir(), "nodeward.db")
	col := start(t, bin.collector, "serve", "--listen", "127.0.0.1:0", "--store", "sqlite:"+db, "--log-format", "json",
		"--agent-rate", "2000", "--agent-burst", "1000")
	addr := fmt.Sprint(col.await("collector serving", 30*time.Second)["listen"])
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const node, batches, batchSize = "fast-agent", 100, 100
	s := sender.New(conn, sender.Config{NodeName: node, MaxPending: batches + 10, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	start := time.Now()
	for b := range batches {
		evs := make([]*nodewardv1.Event, batchSize)
		for i := range evs {
			evs[i] = &nodewardv1.Event{Time: timestamppb.Now(), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
				Process: &nodewardv1.Process{Pid: uint32(b*batchSize + i + 1)}}}}
		}
		s.EnqueueEvents(evs)
	}
	waitFor(t, "every batch to be acked", 2*time.Minute, func() bool {
		_, pending, _ := s.Stats()
		return pending == 0
	})
	took := time.Since(start)
	cancel()
	<-done
	col.stop()
	// A batch is paid for after its ack, so the last one's wait is not seen:
	// 10,000 events less a 1,000 burst less the last 100, at 2,000/s, take
	// at least 4.45 s.
	if min := 4450 * time.Millisecond; took < min {
		t.Errorf("10,000 events delivered in %s: the rate limit did not hold the agent back (want >= %s)", took, min)
	}
	if _, _, lost := s.Stats(); lost != 0 {
		t.Errorf("the agent dropped %d events", lost)
	}
	store := openStore(t, db)
	var n int
	if err := store.QueryRow(`SELECT COUNT(*) FROM events WHERE node = ?`, node).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != batches*batchSize {
		t.Errorf("%d events stored, want %d", n, batches*batchSize)
	}
	t.Logf("10,000 events in %s at --agent-rate 2000", took.Round(time.Millisecond))
}
