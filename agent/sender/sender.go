// Package sender is the agent's half of AgentService.Connect: it numbers what
// the agent sends, keeps it (in memory or in an on-disk spool) until the
// collector acks it, replays it after a reconnect, and reconnects with
// backoff and jitter. Loss is never silent: whatever a full queue drops is
// reported to the collector as a LossEvent.
package sender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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
	// AckTimeout ends a stream whose oldest sent message has waited this long
	// for its ack: the collector or the path to it has stalled.
	AckTimeout time.Duration
	// Queue holds unacked data; nil means in memory, bounded by MaxPending.
	Queue      Queue
	MaxPending int
	// BackoffMin and BackoffMax bound the reconnect delay.
	BackoffMin, BackoffMax time.Duration
	// OnConnect runs after each Welcome, e.g. to send a fresh snapshot.
	OnConnect func()
	// OnRescan runs when the collector asks for a rescan.
	OnRescan func(sources []string)
	Log      *slog.Logger
}

// Sender owns the outgoing queue. Enqueue may be called from any goroutine.
type Sender struct {
	cfg    Config
	client nodewardv1.AgentServiceClient

	mu        sync.Mutex
	queue     Queue
	lastAcked uint64 // sequence
	// lost counts events the queue dropped; reported holds how many of them
	// a LossEvent has already carried.
	lost, reported uint64
	queueErr       error
	wake           chan struct{}
	connected      atomic.Bool
}

// Connected reports whether a stream is open and welcomed right now.
func (s *Sender) Connected() bool { return s.connected.Load() }

// New returns a Sender that streams over conn.
func New(conn grpc.ClientConnInterface, cfg Config) *Sender {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 30 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = time.Minute
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
	q := cfg.Queue
	if q == nil {
		q = newMemQueue(cfg.MaxPending)
	}
	return &Sender{cfg: cfg, client: nodewardv1.NewAgentServiceClient(conn), queue: q, wake: make(chan struct{}, 1)}
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
	s.appendLocked(req)
	if s.lost > s.reported {
		// Say what was lost, in the stream, right away. If a later overflow
		// drops this report too, appendLocked takes it back and it is made
		// again.
		n := s.lost - s.reported
		s.reported = s.lost
		le := &nodewardv1.LossEvent{Queue: n}
		if _, onDisk := s.queue.(*Spool); onDisk {
			le = &nodewardv1.LossEvent{Spool: n}
		}
		s.appendLocked(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{Events: []*nodewardv1.Event{{
			Time: timestamppb.Now(),
			Body: &nodewardv1.Event_Loss{Loss: le},
		}}}}})
		s.cfg.Log.Warn("queue full: oldest events dropped", "events", n, "lost_total", s.lost)
	}
	s.mu.Unlock()
	s.signal()
}

// appendLocked queues req and accounts for whatever the queue dropped.
func (s *Sender) appendLocked(req *nodewardv1.ConnectRequest) {
	dropped, err := s.queue.Append(req)
	s.lost += dropped.Events
	s.reported -= dropped.Reported
	if err != nil {
		if s.queueErr == nil {
			s.cfg.Log.Error("queue append failed; data is being lost", "err", err)
		}
		s.queueErr = err
		s.lost += countEvents(req)
	}
}

// Stats reports the last acked sequence, the queue length and the events
// dropped because the queue was full.
func (s *Sender) Stats() (lastAcked uint64, pending int, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAcked, s.queue.Len(), s.lost
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
		select {
		case <-ctx.Done():
			// Stopping is not a failure of the stream.
			return nil
		default:
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
		return false, fmt.Errorf("send hello: %w", streamError(stream, err))
	}
	first, err := recvWithin(ctx, stream, s.cfg.AckTimeout)
	if err != nil {
		return false, fmt.Errorf("await welcome: %w", err)
	}
	w := first.GetWelcome()
	if w == nil {
		return false, errors.New("collector did not answer Hello with Welcome")
	}
	if err := s.welcome(w.GetLastStoredSequence()); err != nil {
		return false, err
	}
	s.cfg.Log.Info("connected to collector", "collector_version", w.GetCollectorVersion(), "last_stored", w.GetLastStoredSequence())
	s.connected.Store(true)
	defer s.connected.Store(false)
	if s.cfg.OnConnect != nil {
		s.cfg.OnConnect()
	}

	acks := make(chan struct{}, 1)
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream, acks) }()

	var (
		lastSent  uint64    // highest id sent on this stream
		waitSince time.Time // when the oldest unacked send went out
	)
	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	stall := time.NewTicker(max(s.cfg.AckTimeout/4, 10*time.Millisecond))
	defer stall.Stop()
	for {
		for {
			req, id, ok, err := s.nextToSend(lastSent)
			if err != nil {
				return true, err
			}
			if !ok {
				break
			}
			if err := stream.Send(req); err != nil {
				// The receiving goroutine sees the server's status, if any.
				return true, fmt.Errorf("send: %w", err)
			}
			if waitSince.IsZero() {
				waitSince = time.Now()
			}
			lastSent = id
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-recvErr:
			return true, err
		case <-s.wake:
		case <-acks:
			waitSince = time.Time{}
			if s.unacked(lastSent) {
				waitSince = time.Now()
			}
		case <-stall.C:
			if !waitSince.IsZero() && time.Since(waitSince) > s.cfg.AckTimeout {
				return true, fmt.Errorf("no ack for %s: the collector or the network has stalled", s.cfg.AckTimeout)
			}
		case <-heartbeat.C:
			hb := &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Heartbeat{Heartbeat: &nodewardv1.Heartbeat{Time: timestamppb.Now()}}}
			if err := stream.Send(hb); err != nil {
				return true, fmt.Errorf("send heartbeat: %w", err)
			}
		}
	}
}

// streamError turns the io.EOF a send reports on a stream the server has
// ended into the status the server ended it with (a refusal's reason). Only
// for before the receiving goroutine starts: a stream has one reader.
func streamError(stream nodewardv1.AgentService_ConnectClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}

// recvWithin receives one message or gives up after d.
func recvWithin(ctx context.Context, stream nodewardv1.AgentService_ConnectClient, d time.Duration) (*nodewardv1.ConnectResponse, error) {
	type res struct {
		m   *nodewardv1.ConnectResponse
		err error
	}
	c := make(chan res, 1)
	go func() {
		m, err := stream.Recv()
		c <- res{m, err}
	}()
	select {
	case r := <-c:
		return r.m, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("no answer within %s", d)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// welcome reconciles the queue with what the store already holds. The first
// Welcome fixes the offset so new data is numbered after the store's last
// sequence; anything at or below that sequence was committed before.
func (s *Sender) welcome(lastStored uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	off, ok := s.queue.Offset()
	if !ok {
		off = int64(lastStored) + 1 - int64(s.queue.First())
		if err := s.queue.SetOffset(off); err != nil {
			return err
		}
	}
	if committed := int64(lastStored) - off; committed > 0 {
		if err := s.queue.Ack(uint64(committed)); err != nil {
			return err
		}
	}
	s.lastAcked = max(s.lastAcked, lastStored)
	return nil
}

// unacked reports whether anything sent (id up to lastSent) awaits its ack.
func (s *Sender) unacked(lastSent uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.Len() > 0 && s.queue.First() <= lastSent
}

// nextToSend returns the first queued item not yet sent on this stream,
// with its sequence number.
func (s *Sender) nextToSend(lastSent uint64) (*nodewardv1.ConnectRequest, uint64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, req, ok, err := s.queue.Next(lastSent)
	if err != nil || !ok {
		return nil, 0, false, err
	}
	off, _ := s.queue.Offset()
	req.Sequence = uint64(int64(id) + off)
	return req, id, true, nil
}

// receive handles acks and collector requests until the stream ends.
func (s *Sender) receive(stream nodewardv1.AgentService_ConnectClient, acks chan<- struct{}) error {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		switch p := resp.GetPayload().(type) {
		case *nodewardv1.ConnectResponse_Ack:
			if err := s.ack(p.Ack.GetSequence()); err != nil {
				return err
			}
			s.cfg.Log.Debug("acked", "seq", p.Ack.GetSequence(), "duplicate", p.Ack.GetDuplicate())
			select {
			case acks <- struct{}{}:
			default:
			}
		case *nodewardv1.ConnectResponse_Rescan:
			if s.cfg.OnRescan != nil {
				s.cfg.OnRescan(p.Rescan.GetSources())
			}
		}
	}
}

// ack forgets everything up to seq: acks come in order.
func (s *Sender) ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	off, _ := s.queue.Offset()
	if id := int64(seq) - off; id > 0 {
		if err := s.queue.Ack(uint64(id)); err != nil {
			return err
		}
	}
	s.lastAcked = max(s.lastAcked, seq)
	return nil
}

// Close releases the queue (flushing a spool).
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.Close()
}
