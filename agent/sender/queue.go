package sender

import (
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// Queue holds what the agent has not had acked yet. Items get increasing
// ids when appended; the sequence number on the wire is id + offset, where
// the offset is fixed at the first Welcome (so new data continues after what
// the store holds) and kept with the queue (so a spool that survives a
// restart keeps its numbering). A dropped item leaves a hole in the ids, and
// so in the node's sequence, which the collector shows as a gap.
type Queue interface {
	// Append adds a request and returns what it had to drop to stay within
	// bounds.
	Append(req *nodewardv1.ConnectRequest) (Dropped, error)
	// Next returns the first item with an id above after.
	Next(after uint64) (id uint64, req *nodewardv1.ConnectRequest, ok bool, err error)
	// Ack forgets every item up to and including id.
	Ack(id uint64) error
	// First is the id the next unacked item has or will have.
	First() uint64
	// Offset returns the id-to-sequence offset, if one was set.
	Offset() (offset int64, ok bool)
	SetOffset(offset int64) error
	// Len is the number of items held.
	Len() int
	Close() error
}

// Dropped is what a full queue threw away: node events, and earlier loss
// reports (which must then be made again).
type Dropped struct {
	Events   uint64
	Reported uint64
}

func (d *Dropped) add(req *nodewardv1.ConnectRequest) {
	for _, ev := range req.GetEvents().GetEvents() {
		if l := ev.GetLoss(); l != nil {
			d.Reported += l.GetSpool() + l.GetQueue()
			continue
		}
		d.Events++
	}
}

// countEvents is how many node events (not loss reports) a request carries.
func countEvents(req *nodewardv1.ConnectRequest) uint64 {
	var d Dropped
	d.add(req)
	return d.Events
}

type memItem struct {
	id  uint64
	req *nodewardv1.ConnectRequest
}

// memQueue keeps items in memory, bounded by count; past the bound it drops
// the oldest event batch not yet sent. Snapshots are kept: they are few and
// a lost one would leave the collector with stale posture.
type memQueue struct {
	items     []memItem
	nextID    uint64
	max       int
	offset    int64
	hasOffset bool
}

func newMemQueue(max int) *memQueue { return &memQueue{nextID: 1, max: max} }

func (q *memQueue) Append(req *nodewardv1.ConnectRequest) (Dropped, error) {
	q.items = append(q.items, memItem{q.nextID, req})
	q.nextID++
	var dropped Dropped
	for len(q.items) > q.max {
		i := -1
		for j, it := range q.items {
			if it.req.GetEvents() != nil {
				i = j
				break
			}
		}
		if i < 0 {
			break
		}
		dropped.add(q.items[i].req)
		q.items = append(q.items[:i], q.items[i+1:]...)
	}
	return dropped, nil
}

func (q *memQueue) Next(after uint64) (uint64, *nodewardv1.ConnectRequest, bool, error) {
	for _, it := range q.items {
		if it.id > after {
			return it.id, it.req, true, nil
		}
	}
	return 0, nil, false, nil
}

func (q *memQueue) Ack(id uint64) error {
	n := 0
	for n < len(q.items) && q.items[n].id <= id {
		n++
	}
	clear(q.items[:n])
	q.items = q.items[n:]
	return nil
}

func (q *memQueue) First() uint64 {
	if len(q.items) > 0 {
		return q.items[0].id
	}
	return q.nextID
}

func (q *memQueue) Offset() (int64, bool) { return q.offset, q.hasOffset }

func (q *memQueue) SetOffset(o int64) error {
	q.offset, q.hasOffset = o, true
	return nil
}

func (q *memQueue) Len() int     { return len(q.items) }
func (q *memQueue) Close() error { return nil }
