// Package ingest is the collector's AgentService: it takes each agent's
// stream, commits what arrives, and acks a sequence only once it is stored.
// Live tails see a batch as it arrives, before its commit: a tail is a live
// view and should not wait for the disk; the store is the durable record.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nodeward/nodeward/collector/metrics"
	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/internal/auth"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Publisher receives every new batch as it arrives, before it is committed
// (the live tail hub). A batch whose commit fails is not acked, so the agent
// sends it again; the hub remembers recent sequences and shows it once.
type Publisher interface {
	Publish(store.Committed)
}

// Server implements nodewardv1.AgentServiceServer.
type Server struct {
	nodewardv1.UnimplementedAgentServiceServer
	store    store.Store
	log      *slog.Logger
	version  string
	pub      Publisher
	metrics  *metrics.Metrics
	stopping chan struct{}
	stopOnce sync.Once
	limits   Limits
}

// Limits bound what one agent may send. Over the rate, the stream is simply
// read more slowly: gRPC's flow control then holds the agent back, which
// keeps its data in its own queue or spool rather than dropping it, and
// keeps the collector's memory to one message per stream.
type Limits struct {
	// EventsPerSecond per agent stream; 0 means no limit.
	EventsPerSecond float64
	// Burst is how many events may arrive at once above the rate.
	Burst int
}

// SetLimits sets the per-agent limits for streams opened from now on.
func (s *Server) SetLimits(l Limits) { s.limits = l }

// newLimiter returns the stream's token bucket, nil when unlimited.
func (l Limits) newLimiter() *rate.Limiter {
	if l.EventsPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(l.EventsPerSecond), max(l.Burst, 1))
}

// throttle waits until the stream may take n more events.
func throttle(ctx context.Context, lim *rate.Limiter, n int) error {
	for n > 0 {
		take := min(n, lim.Burst())
		if err := lim.WaitN(ctx, take); err != nil {
			return err
		}
		n -= take
	}
	return nil
}

// New returns an ingest server committing to st. pub and m may be nil. The
// gRPC server hosting it needs ServerCodec.
func New(st store.Store, log *slog.Logger, version string, pub Publisher, m *metrics.Metrics) *Server {
	return &Server{store: st, log: log, version: version, pub: pub, metrics: m, stopping: make(chan struct{})}
}

// Shutdown makes every stream finish the message it is committing, ack it,
// and end, so agents reconnect to another replica or after the restart.
func (s *Server) Shutdown() { s.stopOnce.Do(func() { close(s.stopping) }) }

// Connect implements the agent stream.
func (s *Server) Connect(stream nodewardv1.AgentService_ConnectServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the stream must open with Hello")
	}
	node := hello.GetNodeName()
	if err := ValidNodeName(node); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	// An agent reports only for the node its credential names.
	if err := auth.CheckNode(ctx, node); err != nil {
		return err
	}
	log := s.log.With("node", node)
	if p, ok := peer.FromContext(ctx); ok {
		log = log.With("peer", p.Addr.String())
	}

	last, err := s.store.LastSequence(ctx, node)
	if err != nil {
		log.Error("agent refused: store unavailable", "err", err)
		return status.Error(codes.Unavailable, "store unavailable")
	}
	if err := s.store.TouchNode(ctx, node, time.Now(), true); err != nil {
		return status.Error(codes.Unavailable, "store unavailable")
	}
	if s.metrics != nil {
		s.metrics.AgentsConnected.Inc()
		s.metrics.NodeLastSeen.WithLabelValues(node).SetToCurrentTime()
		defer s.metrics.AgentsConnected.Dec()
	}
	defer func() {
		// The stream's context is done by now; record the disconnect anyway.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.store.TouchNode(dctx, node, time.Now(), false); err != nil {
			log.Warn("recording disconnect", "err", err)
		}
	}()
	if err := stream.Send(&nodewardv1.ConnectResponse{Payload: &nodewardv1.ConnectResponse_Welcome{
		Welcome: &nodewardv1.Welcome{LastStoredSequence: last, CollectorVersion: s.version},
	}}); err != nil {
		return err
	}
	log.Info("agent connected", "agent_version", hello.GetAgentVersion(), "boot_id", hello.GetBootId(),
		"agent_last_acked", hello.GetLastAckedSequence(), "last_stored", last)

	type received struct {
		req wireRequest
		err error
	}
	// Receive in the background so shutdown can end the stream between
	// messages; the channel is unbuffered, so at most one message waits.
	recv := make(chan received)
	go func() {
		for {
			var req wireRequest
			err := stream.RecvMsg(&req)
			select {
			case recv <- received{req, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// Acks go out in order from their own goroutine, so the next batch is
	// read and queued for commit while earlier ones commit.
	// slots bounds the messages committing at once (and so the stream's
	// memory); the acker frees one with each ack.
	acks := make(chan *inflight, maxInFlight)
	slots := make(chan struct{}, maxInFlight)
	ackErr := make(chan error, 1)
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		s.sendAcks(node, stream, acks, slots, ackErr)
	}()
	// Every way out acks what is committed first.
	finish := func(err error) error {
		close(acks)
		<-ackerDone
		select {
		case aerr := <-ackErr:
			return aerr
		default:
			return err
		}
	}
	lim := s.limits.newLimiter()
	var previous *inflight
	for {
		var r received
		select {
		case <-s.stopping:
			log.Info("closing agent stream: collector shutting down")
			return finish(status.Error(codes.Unavailable, "collector shutting down"))
		case err := <-ackErr:
			return finish(err)
		case r = <-recv:
		}
		if errors.Is(r.err, io.EOF) {
			log.Info("agent disconnected")
			return finish(nil)
		}
		if r.err != nil {
			log.Info("agent stream ended", "err", r.err)
			return finish(r.err)
		}
		select {
		case slots <- struct{}{}:
		case err := <-ackErr:
			return finish(err)
		}
		p, err := s.handle(ctx, node, last, r.req, previous)
		if err != nil {
			log.Warn("agent message refused", "seq", r.req.msg.GetSequence(), "err", err)
			return finish(err)
		}
		if p == nil {
			<-slots // a heartbeat: nothing to ack
		} else {
			acks <- p // never blocks: slots bounds what is queued
			previous = p
		}
		// Pay for this batch before reading the next one.
		if n := len(r.req.events); lim != nil && n > 0 {
			if err := throttle(ctx, lim, n); err != nil {
				return finish(status.FromContextError(err).Err())
			}
		}
	}
}

// maxInFlight is how many of one stream's messages may be committing at
// once. One at a time, a thousand streams took turns with the single
// writer: it idled while acks went out and the next batches came in.
const maxInFlight = 4

// inflight is a received message on its way to the store and its ack.
type inflight struct {
	seq      uint64
	kind     string
	events   int
	received time.Time
	done     chan commitResult // the commit's outcome
	acked    chan struct{}     // closed once the ack is sent or refused
}

type commitResult struct {
	dup bool
	err error
}

// sendAcks acks each message once its commit is done, in the order they
// arrived, until acks is closed. After a failed commit or send it acks
// nothing more (the agent sends it all again) and reports the error once.
func (s *Server) sendAcks(node string, stream nodewardv1.AgentService_ConnectServer, acks <-chan *inflight, slots <-chan struct{}, failed chan<- error) {
	var err error
	for p := range acks {
		if err == nil {
			if err = s.ack(node, stream, p, <-p.done); err != nil {
				failed <- err
			}
		}
		close(p.acked)
		<-slots
	}
}

func (s *Server) ack(node string, stream nodewardv1.AgentService_ConnectServer, p *inflight, r commitResult) error {
	if r.err != nil {
		// Not acked: the agent keeps the data and sends it again.
		s.count(p.kind, "error")
		s.log.Error("commit failed", "node", node, "seq", p.seq, "err", r.err)
		return status.Error(codes.Unavailable, "store commit failed")
	}
	if r.dup {
		s.count(p.kind, "duplicate")
	} else {
		s.count(p.kind, "stored")
		if s.metrics != nil && p.kind == "events" {
			s.metrics.IngestEvents.Add(float64(p.events))
		}
	}
	err := stream.Send(&nodewardv1.ConnectResponse{Payload: &nodewardv1.ConnectResponse_Ack{
		Ack: &nodewardv1.Ack{Sequence: p.seq, Duplicate: r.dup},
	}})
	if s.metrics != nil {
		s.metrics.AckLatency.Observe(time.Since(p.received).Seconds())
	}
	return err
}

// handle starts one message's commit and returns it for its ack (nil for a
// heartbeat, which is not acked). lastStored is the node's last stored
// sequence when the stream opened: anything at or below it is a replay of
// stored data, which tails have seen. Event batches commit concurrently; a
// snapshot waits for previous (the stream's last message in flight) and
// is committed before the next message is read, so snapshots, which
// change history compares, are stored in the order they were taken.
func (s *Server) handle(ctx context.Context, node string, lastStored uint64, w wireRequest, previous *inflight) (*inflight, error) {
	now := time.Now()
	req := w.msg
	if s.metrics != nil {
		s.metrics.NodeLastSeen.WithLabelValues(node).SetToCurrentTime()
	}
	p := &inflight{seq: req.GetSequence(), received: now, done: make(chan commitResult, 1), acked: make(chan struct{})}
	switch payload := req.GetPayload().(type) {
	case *nodewardv1.ConnectRequest_Heartbeat:
		err := s.store.TouchNode(ctx, node, now, true)
		s.metrics.Observe("touch_node", now, err)
		if err != nil {
			s.count("heartbeat", "error")
			return nil, status.Error(codes.Unavailable, "store unavailable")
		}
		s.count("heartbeat", "stored")
		return nil, nil
	case *nodewardv1.ConnectRequest_Snapshot:
		if p.seq == 0 {
			return nil, status.Error(codes.InvalidArgument, "snapshot without a sequence number")
		}
		snap := payload.Snapshot
		if snap.GetNode() == nil {
			snap.Node = &nodewardv1.Node{}
		}
		// The node's name is the stream's, whatever the payload claims.
		snap.Node.Name = node
		p.kind = "snapshot"
		if err := waitAcked(ctx, previous); err != nil {
			return nil, err
		}
		s.publish(lastStored, store.Committed{Node: node, Seq: p.seq})
		dup, err := s.store.CommitSnapshot(ctx, node, p.seq, snap, now)
		s.metrics.Observe("commit_snapshot", now, err)
		p.done <- commitResult{dup, err}
	case *nodewardv1.ConnectRequest_Events:
		if p.seq == 0 {
			return nil, status.Error(codes.InvalidArgument, "event batch without a sequence number")
		}
		// The collector's own fields (whose, and where in the stream) set
		// in the wire form the store and tails use.
		wire, err := stampEvents(w.events, node, p.seq)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "event batch: %v", err)
		}
		p.kind, p.events = "events", len(wire)
		s.publish(lastStored, store.Committed{Node: node, Seq: p.seq, Wire: wire})
		go func() {
			dup, err := s.store.CommitEvents(ctx, node, p.seq, nil, wire, now)
			s.metrics.Observe("commit_events", now, err)
			p.done <- commitResult{dup, err}
		}()
	case *nodewardv1.ConnectRequest_Hello:
		return nil, status.Error(codes.InvalidArgument, "Hello sent twice")
	default:
		return nil, status.Error(codes.InvalidArgument, "empty message")
	}
	return p, nil
}

// waitAcked waits until p (nil: nothing in flight) is acked.
func waitAcked(ctx context.Context, p *inflight) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.acked:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// publish hands a new batch (no events for a snapshot, whose sequence
// still counts) to the live tails.
func (s *Server) publish(lastStored uint64, c store.Committed) {
	if s.pub != nil && c.Seq > lastStored {
		s.pub.Publish(c)
	}
}

func (s *Server) count(kind, result string) {
	if s.metrics != nil {
		s.metrics.IngestMessages.WithLabelValues(kind, result).Inc()
	}
}

// ValidNodeName accepts Kubernetes node names: DNS subdomains.
func ValidNodeName(name string) error {
	if name == "" {
		return errors.New("node name is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("node name is longer than 253 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return fmt.Errorf("node name %q: only lower-case letters, digits, '-' and '.' are allowed", name)
		}
	}
	return nil
}
