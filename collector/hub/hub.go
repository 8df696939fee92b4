// Package hub fans events out to live tail subscribers: each batch as this
// replica receives it, and other replicas' batches once committed. Ingest
// publishes without ever waiting: each subscriber has a bounded queue, and
// what does not fit is counted and later announced to that subscriber as a
// gap. Per-node sequence numbers are watched too, so a tail shows where a
// node's data was lost anywhere upstream.
package hub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultQueue is each subscriber's queue, in events.
const DefaultQueue = 20000

// Hub is the live fan-out. The zero value is not usable; call New.
type Hub struct {
	queue int

	mu   sync.RWMutex
	subs map[*Subscriber]struct{}

	seqMu sync.Mutex
	nodes map[string]*nodeSeq

	published atomic.Uint64
	dropped   atomic.Uint64
	seqGaps   atomic.Uint64
}

// recent is how many of a node's latest sequences are remembered to drop
// a batch delivered twice (an agent resending after a failed commit, a
// replica catching up after a reconnect).
const recent = 512

type nodeSeq struct {
	highest uint64
	seen    map[uint64]struct{}
	ring    [recent]uint64
	pos     int
}

// New returns a hub whose subscribers each queue up to queue events.
func New(queue int) *Hub {
	if queue <= 0 {
		queue = DefaultQueue
	}
	return &Hub{queue: queue, subs: map[*Subscriber]struct{}{}, nodes: map[string]*nodeSeq{}}
}

// Batch is one batch's events as subscribers receive them. Every
// subscriber is handed the same Batch, so an event is encoded once however
// many tails send it (or never, when it came with its encoding).
type Batch struct {
	Events []*nodewardv1.Event
	wire   [][]byte

	once    sync.Once
	encoded [][]byte
	err     error
}

// Encoded returns event i in protobuf wire form.
func (b *Batch) Encoded(i int) ([]byte, error) {
	b.once.Do(func() {
		if b.wire != nil {
			b.encoded = b.wire
			return
		}
		b.encoded = make([][]byte, len(b.Events))
		for j, ev := range b.Events {
			if b.encoded[j], b.err = proto.Marshal(ev); b.err != nil {
				b.err = fmt.Errorf("encode event %s/%d/%d: %w", ev.GetNodeName(), ev.GetSequence(), ev.GetIndex(), b.err)
				return
			}
		}
	})
	if b.err != nil {
		return nil, b.err
	}
	return b.encoded[i], nil
}

// Subscriber is one tail. Read batches from C; call Close when done.
type Subscriber struct {
	h  *Hub
	C  <-chan *Batch
	ch chan *Batch

	mu     sync.Mutex
	queued atomic.Int64
	missed uint64
	closed bool
}

// Subscribe adds a subscriber.
func (h *Hub) Subscribe() *Subscriber {
	ch := make(chan *Batch, 4096)
	s := &Subscriber{h: h, C: ch, ch: ch}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Done tells the hub the subscriber consumed a batch of n events.
func (s *Subscriber) Done(n int) { s.queued.Add(-int64(n)) }

// Close removes the subscriber.
func (s *Subscriber) Close() {
	s.h.mu.Lock()
	delete(s.h.subs, s)
	s.h.mu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// Subscribers is how many tails are open.
func (h *Hub) Subscribers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs)
}

// Published, Dropped and SequenceGaps are running totals: events offered
// to subscribers, events a slow subscriber missed, and holes seen in
// nodes' sequence numbers.
func (h *Hub) Published() uint64    { return h.published.Load() }
func (h *Hub) Dropped() uint64      { return h.dropped.Load() }
func (h *Hub) SequenceGaps() uint64 { return h.seqGaps.Load() }

// track records a batch's sequence: it reports whether the batch was
// already delivered, and the sequence hole before it, if any.
func (h *Hub) track(node string, seq uint64) (dup bool, gap *nodewardv1.GapEvent) {
	h.seqMu.Lock()
	defer h.seqMu.Unlock()
	ns := h.nodes[node]
	if ns == nil {
		ns = &nodeSeq{seen: map[uint64]struct{}{}}
		h.nodes[node] = ns
	}
	if _, ok := ns.seen[seq]; ok {
		return true, nil
	}
	if old := ns.ring[ns.pos]; old != 0 {
		delete(ns.seen, old)
	}
	ns.ring[ns.pos] = seq
	ns.pos = (ns.pos + 1) % recent
	ns.seen[seq] = struct{}{}
	// The first batch the hub sees for a node sets the baseline: what came
	// before this collector started is not a loss.
	if ns.highest != 0 && seq > ns.highest+1 {
		gap = &nodewardv1.GapEvent{FromSequence: ns.highest + 1, ToSequence: seq - 1}
	}
	if seq > ns.highest {
		ns.highest = seq
	}
	return false, gap
}

// Publish offers one batch to every subscriber without blocking. A
// snapshot (no events) only advances the node's sequence. Encoded events
// are decoded only when someone is tailing.
func (h *Hub) Publish(c store.Committed) {
	dup, gap := h.track(c.Node, c.Seq)
	if dup {
		return
	}
	n := max(len(c.Events), len(c.Wire))
	if gap != nil {
		h.seqGaps.Add(1)
		n++
	}
	if n == 0 {
		return
	}
	h.published.Add(uint64(n))
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(h.subs) == 0 {
		return
	}
	batch, wire := c.Events, c.Wire
	if batch == nil && wire != nil {
		var err error
		if batch, err = decode(wire); err != nil {
			// Ingest checked every event; were one to fail here anyway,
			// tails hear of it as missed events, and the store has them.
			for s := range h.subs {
				s.mu.Lock()
				s.drop(int64(n))
				s.mu.Unlock()
			}
			return
		}
	}
	if gap != nil {
		marker := &nodewardv1.Event{NodeName: c.Node, Sequence: c.Seq, Time: timestamppb.New(time.Now()), Body: &nodewardv1.Event_Gap{Gap: gap}}
		batch = append([]*nodewardv1.Event{marker}, batch...)
		wire = nil
	}
	b := &Batch{Events: batch, wire: wire}
	for s := range h.subs {
		s.offer(b)
	}
}

// decode decodes encoded events.
func decode(wire [][]byte) ([]*nodewardv1.Event, error) {
	evs := make([]*nodewardv1.Event, len(wire))
	for i, w := range wire {
		evs[i] = &nodewardv1.Event{}
		if err := proto.Unmarshal(w, evs[i]); err != nil {
			return nil, fmt.Errorf("decode event %d: %w", i, err)
		}
	}
	return evs, nil
}

func (s *Subscriber) offer(batch *Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	n := int64(len(batch.Events))
	if s.missed > 0 {
		// Announce the loss at the point it happened, before newer events.
		gap := &Batch{Events: []*nodewardv1.Event{{Time: timestamppb.New(time.Now()), Body: &nodewardv1.Event_Gap{Gap: &nodewardv1.GapEvent{Missed: s.missed}}}}}
		if s.queued.Load()+n+1 > int64(s.h.queue) || !s.send(gap) {
			s.drop(n)
			return
		}
		s.missed = 0
	}
	if s.queued.Load()+n > int64(s.h.queue) || !s.send(batch) {
		s.drop(n)
	}
}

func (s *Subscriber) send(batch *Batch) bool {
	select {
	case s.ch <- batch:
		s.queued.Add(int64(len(batch.Events)))
		return true
	default:
		return false
	}
}

func (s *Subscriber) drop(n int64) {
	s.missed += uint64(n)
	s.h.dropped.Add(uint64(n))
}
