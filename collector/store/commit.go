package store

import (
	"context"
	"errors"
	"sync"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// Request is one commit waiting in a group: a snapshot or an event batch.
type Request struct {
	Node      string
	Seq       uint64
	Received  time.Time
	Snapshot  *nodewardv1.Snapshot
	Events    int  // how many events an event batch holds
	Duplicate bool // set by the apply function
	// Prepared is backend-specific work done before queueing (encoded
	// rows), so the single writer only writes.
	Prepared any

	done   chan error
	queued time.Time
}

// Committer groups concurrent commits into shared transactions: with a
// thousand agents each sending small batches, one durable transaction per
// batch would cap ingest at the disk's flush rate. Every request in a
// group is answered only after the group's transaction commits.
type Committer struct {
	in        chan *Request
	apply     func(context.Context, []*Request) error
	maxRows   int
	window    time.Duration
	wg        sync.WaitGroup
	closeOnce sync.Once
	stop      chan struct{}
}

// CommitWindow is how long a group waits for more requests after its
// first. Each transaction rewrites every page it touches, and a thousand
// nodes' batches touch a page each in the per-node indexes: ten
// milliseconds of gathering cut the collector's CPU by about a fifth at
// 10,000 events/s, for ten milliseconds of ack latency. Under load a group
// fills to maxRows sooner and does not wait.
const CommitWindow = 10 * time.Millisecond

// NewCommitter starts workers goroutines that call apply with groups of up
// to maxRows events (snapshots count as one), gathered for up to window.
func NewCommitter(apply func(context.Context, []*Request) error, workers, maxRows int, window time.Duration) *Committer {
	c := &Committer{in: make(chan *Request, 4096), apply: apply, maxRows: maxRows, window: window, stop: make(chan struct{})}
	for range workers {
		c.wg.Add(1)
		go c.run()
	}
	return c
}

// ErrClosed is returned by a commit submitted after Close.
var ErrClosed = errors.New("store closed")

// Submit queues r and waits for its group to commit.
func (c *Committer) Submit(ctx context.Context, r *Request) (bool, error) {
	r.done = make(chan error, 1)
	r.queued = time.Now()
	select {
	case c.in <- r:
	case <-c.stop:
		return false, ErrClosed
	case <-ctx.Done():
		return false, ctx.Err()
	}
	select {
	case err := <-r.done:
		return r.Duplicate, err
	case <-ctx.Done():
		// The group may still commit; the agent then replays and gets a
		// duplicate ack. Nothing unacked is ever claimed stored.
		return false, ctx.Err()
	}
}

// Close finishes queued commits and stops the workers.
func (c *Committer) Close() {
	c.closeOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// rows is a request's weight in a group: its events, or a snapshot's
// inventory rows, so a group of snapshots stays as short as one of events.
func rows(r *Request) int {
	if r.Snapshot != nil {
		return 1 + len(r.Snapshot.GetPackages().GetPackages()) + len(r.Snapshot.GetPorts().GetPorts()) + len(r.Snapshot.GetFindings())
	}
	return r.Events + 1
}

func (c *Committer) run() {
	defer c.wg.Done()
	window := time.NewTimer(c.window)
	defer window.Stop()
	shared := false
	for {
		var first *Request
		select {
		case first = <-c.in:
		case <-c.stop:
			// Drain what was queued before Close.
			for {
				select {
				case r := <-c.in:
					c.commit([]*Request{r})
				default:
					return
				}
			}
		}
		group := []*Request{first}
		n := rows(first)
		// A lone writer (the previous group had one request) does not wait:
		// the window pays only when there are others to wait for. The window
		// runs from when the first request was queued: requests that
		// gathered while the previous group committed have waited already,
		// and making them wait on left the writer idle.
		waited := time.Since(first.queued)
		wait := shared && waited < c.window
		window.Reset(c.window - waited)
		for n < c.maxRows {
			// What is already queued goes in first, whatever the window.
			var r *Request
			select {
			case r = <-c.in:
			default:
				if wait {
					select {
					case r = <-c.in:
					case <-window.C:
					}
				}
			}
			if r == nil {
				break
			}
			group = append(group, r)
			n += rows(r)
		}
		shared = len(group) > 1
		c.commit(group)
	}
}

func (c *Committer) commit(group []*Request) {
	// Commits outlive any one agent's stream: a cancelled stream must not
	// roll back the other agents' data in the same group.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.apply(ctx, group)
	if err != nil && len(group) > 1 {
		// One bad request must not fail the rest: retry them one by one,
		// each with a time budget of its own.
		for _, r := range group {
			r.Duplicate = false
			rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
			r.done <- c.apply(rctx, []*Request{r})
			rcancel()
		}
		return
	}
	for _, r := range group {
		r.done <- err
	}
}
