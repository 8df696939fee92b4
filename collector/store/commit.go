package store

import (
	"context"
	"errors"
	"fmt"
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
// group is answered only once the group's transaction is on disk.
type Committer struct {
	in        chan *Request
	apply     func(context.Context, []*Request) error
	flush     func() error
	unflushed chan answer // committed groups waiting for a flush
	flushed   chan struct{}
	maxRows   int
	window    time.Duration
	wg        sync.WaitGroup
	closeOnce sync.Once
	stop      chan struct{}
}

// answer is a group's outcome, one error per request, held until a flush.
type answer struct {
	group []*Request
	errs  []error
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
// With flush nil, apply's commits are durable when it returns. Otherwise
// apply only commits, and flush makes everything committed so far
// durable: a group is answered after a flush that began after its commit,
// and one flush answers every group committed while the one before it
// ran, so the writer goes on with the next group while the disk works.
func NewCommitter(apply func(context.Context, []*Request) error, flush func() error, workers, maxRows int, window time.Duration) *Committer {
	c := &Committer{in: make(chan *Request, 4096), apply: apply, flush: flush, maxRows: maxRows, window: window, stop: make(chan struct{})}
	if flush != nil {
		c.unflushed = make(chan answer, 1024)
		c.flushed = make(chan struct{})
		go c.flushLoop()
	}
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
	c.closeOnce.Do(func() {
		close(c.stop)
		c.wg.Wait()
		if c.flush != nil {
			close(c.unflushed)
			<-c.flushed
		}
	})
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
	errs := make([]error, len(group))
	err := c.apply(ctx, group)
	for i := range errs {
		errs[i] = err
	}
	if err != nil && len(group) > 1 {
		// One bad request must not fail the rest: retry them one by one,
		// each with a time budget of its own.
		for i, r := range group {
			r.Duplicate = false
			rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
			errs[i] = c.apply(rctx, []*Request{r})
			rcancel()
		}
	}
	if c.flush == nil {
		answerAll(answer{group, errs}, nil)
		return
	}
	c.unflushed <- answer{group, errs}
}

// flushLoop flushes whenever groups wait for it and answers them, until
// unflushed is closed and drained.
func (c *Committer) flushLoop() {
	defer close(c.flushed)
	for first := range c.unflushed {
		waiting := []answer{first}
		// Only this loop receives, so what len counts is there to take.
		for len(c.unflushed) > 0 {
			waiting = append(waiting, <-c.unflushed)
		}
		err := c.flush()
		if err != nil {
			err = fmt.Errorf("flush: %w", err)
		}
		for _, a := range waiting {
			answerAll(a, err)
		}
	}
}

// answerAll answers a's requests; flushErr fails those that committed, as
// what they wrote may not be on disk.
func answerAll(a answer, flushErr error) {
	for i, r := range a.group {
		err := a.errs[i]
		if err == nil && flushErr != nil {
			err = flushErr
			r.Duplicate = false
		}
		r.done <- err
	}
}
