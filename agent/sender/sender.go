// Package sender is the agent's half of AgentService.Connect: it numbers what
// the agent sends, keeps it until the collector acks it, replays it after a
// reconnect, and reconnects with backoff and jitter.
package sender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config configures a Sender.
type Config struct {
	NodeName     string
	BootID       string
	AgentVersion string
	// Heartbeat is how often an idle stream says the node is alive.
	Heartbeat time.Duration
	// MaxPending bounds unacked messages kept in memory; past it the oldest
	// event batches are dropped and counted.
	MaxPending int
	// BackoffMin and BackoffMax bound the reconnect delay.
	BackoffMin, BackoffMax time.Duration
	// OnConnect runs after each Welcome, e.g. to send a fresh snapshot.
	OnConnect func()
	// OnRescan runs when the collector asks for a rescan.
	OnRescan func(sources []string)
	Log      *slog.Logger
}

type item struct {
	seq uint64 // 0 until first sent on a stream
	req *nodewardv1.ConnectRequest
}

// Sender owns the outgoing queue. Enqueue may be called from any goroutine.
type Sender struct {
	cfg    Config
	client nodewardv1.AgentServiceClient

	mu        sync.Mutex
	pending   []*item
	nextSeq   uint64 // 0 until the first Welcome tells us where to start
	lastAcked uint64
	dropped   uint64
	wake      chan struct{}
}

// New returns a Sender that streams over conn.
func New(conn grpc.ClientConnInterface, cfg Config) *Sender {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4096
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 250 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Sender{cfg: cfg, client: nodewardv1.NewAgentServiceClient(conn), wake: make(chan struct{}, 1)}
}

// EnqueueSnapshot queues a snapshot for delivery.
func (s *Sender) EnqueueSnapshot(snap *nodewardv1.Snapshot) {
	s.enqueue(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Snapshot{Snapshot: snap}})
}

// EnqueueEvents queues a batch of events for delivery.
func (s *Sender) EnqueueEvents(events []*nodewardv1.Event) {
	s.enqueue(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{Events: events}}})
}

func (s *Sender) enqueue(req *nodewardv1.ConnectRequest) {
	s.mu.Lock()
	s.pending = append(s.pending, &item{req: req})
	s.trimLocked()
	s.mu.Unlock()
	s.signal()
}

// trimLocked drops the oldest event batches that were never sent while the
// queue is over its bound. Snapshots are kept: a newer one supersedes them
// anyway, and they are few.
func (s *Sender) trimLocked() {
	for len(s.pending) > s.cfg.MaxPending {
		i := -1
		for j, it := range s.pending {
			if it.seq == 0 && it.req.GetEvents() != nil {
				i = j
				break
			}
		}
		if i < 0 {
			return
		}
		s.dropped += uint64(len(s.pending[i].req.GetEvents().GetEvents()))
		s.pending = append(s.pending[:i], s.pending[i+1:]...)
	}
}

// Stats reports the last acked sequence, the queue length and the events
// dropped because the queue was full.
func (s *Sender) Stats() (lastAcked uint64, pending int, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAcked, len(s.pending), s.dropped
}

func (s *Sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run keeps a stream open until ctx ends, reconnecting with exponential
// backoff and full jitter.
func (s *Sender) Run(ctx context.Context) error {
	backoff := s.cfg.BackoffMin
	for {
		welcomed, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if welcomed {
			backoff = s.cfg.BackoffMin
		}
		delay := time.Duration(rand.Int64N(int64(backoff))) + s.cfg.BackoffMin/2
		s.cfg.Log.Warn("collector stream lost, reconnecting", "err", err, "retry_in", delay.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		backoff = min(backoff*2, s.cfg.BackoffMax)
	}
}

// session runs one stream; welcomed reports whether it got as far as Welcome.
func (s *Sender) session(ctx context.Context) (welcomed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.client.Connect(ctx)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	s.mu.Lock()
	hello := &nodewardv1.Hello{NodeName: s.cfg.NodeName, BootId: s.cfg.BootID, AgentVersion: s.cfg.AgentVersion, LastAckedSequence: s.lastAcked}
	s.mu.Unlock()
	if err := stream.Send(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, fmt.Errorf("await welcome: %w", err)
	}
	w := first.GetWelcome()
	if w == nil {
		return false, errors.New("collector did not answer Hello with Welcome")
	}
	s.welcome(w.GetLastStoredSequence())
	s.cfg.Log.Info("connected to collector", "collector_version", w.GetCollectorVersion(), "last_stored", w.GetLastStoredSequence())
	if s.cfg.OnConnect != nil {
		s.cfg.OnConnect()
	}

	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream) }()

	var lastSent uint64 // highest sequence sent on this stream
	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		for {
			req, ok := s.nextToSend(&lastSent)
			if !ok {
				break
			}
			if err := stream.Send(req); err != nil {
				return true, fmt.Errorf("send: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-recvErr:
			return true, err
		case <-s.wake:
		case <-heartbeat.C:
			hb := &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Heartbeat{Heartbeat: &nodewardv1.Heartbeat{Time: timestamppb.Now()}}}
			if err := stream.Send(hb); err != nil {
				return true, fmt.Errorf("send heartbeat: %w", err)
			}
		}
	}
}

// welcome reconciles the queue with what the store already holds: anything
// numbered at or below it was committed before, and new data is numbered
// after it.
func (s *Sender) welcome(lastStored uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.pending[:0]
	for _, it := range s.pending {
		if it.seq != 0 && it.seq <= lastStored {
			continue
		}
		kept = append(kept, it)
	}
	clear(s.pending[len(kept):])
	s.pending = kept
	if s.nextSeq <= lastStored {
		s.nextSeq = lastStored + 1
	}
	if s.lastAcked < lastStored {
		s.lastAcked = lastStored
	}
}

// nextToSend returns the first pending item not yet sent on this stream,
// numbering it on its first send. Pending is ordered: numbered items first,
// in sequence order, then unnumbered ones.
func (s *Sender) nextToSend(lastSent *uint64) (*nodewardv1.ConnectRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range s.pending {
		if it.seq != 0 && it.seq <= *lastSent {
			continue
		}
		if it.seq == 0 {
			it.seq = s.nextSeq
			s.nextSeq++
			it.req.Sequence = it.seq
		}
		*lastSent = it.seq
		return it.req, true
	}
	return nil, false
}

// receive handles acks and collector requests until the stream ends.
func (s *Sender) receive(stream nodewardv1.AgentService_ConnectClient) error {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		switch p := resp.GetPayload().(type) {
		case *nodewardv1.ConnectResponse_Ack:
			s.ack(p.Ack.GetSequence())
			s.cfg.Log.Debug("acked", "seq", p.Ack.GetSequence(), "duplicate", p.Ack.GetDuplicate())
		case *nodewardv1.ConnectResponse_Rescan:
			if s.cfg.OnRescan != nil {
				s.cfg.OnRescan(p.Rescan.GetSources())
			}
		}
	}
}

// ack forgets every pending item up to seq: acks come in order.
func (s *Sender) ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for n < len(s.pending) && s.pending[n].seq != 0 && s.pending[n].seq <= seq {
		n++
	}
	s.pending = append(s.pending[:0], s.pending[n:]...)
	if seq > s.lastAcked {
		s.lastAcked = seq
	}
}
