package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A lone writer never waits out the commit window, and requests queued
// behind a busy writer commit in one group.
func TestCommitterWindow(t *testing.T) {
	var (
		mu     sync.Mutex
		groups []int
	)
	var hold atomic.Bool
	held, release := make(chan struct{}), make(chan struct{})
	apply := func(_ context.Context, g []*Request) error {
		mu.Lock()
		groups = append(groups, len(g))
		mu.Unlock()
		if hold.CompareAndSwap(true, false) {
			close(held)
			<-release // hold the writer so the next requests queue up
		}
		return nil
	}
	// An hour's window: waiting it out would time the test out.
	c := NewCommitter(apply, nil, 1, 1000, time.Hour)
	defer c.Close()
	ctx := context.Background()

	// Alone, each request commits by itself at once.
	for seq := uint64(1); seq <= 3; seq++ {
		if _, err := c.Submit(ctx, &Request{Node: "a", Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	hold.Store(true)
	done := make(chan error, 1)
	go func() { _, err := c.Submit(ctx, &Request{Node: "a", Seq: 4}); done <- err }()
	<-held
	var wg sync.WaitGroup
	for seq := uint64(5); seq <= 8; seq++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Submit(ctx, &Request{Node: "a", Seq: seq}); err != nil {
				t.Error(err)
			}
		}()
	}
	for len(c.in) < 4 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(groups) != "[1 1 1 1 4]" {
		t.Fatalf("groups %v: want three alone, one held, then the four queued behind it together", groups)
	}
}

// With a flush, a request is answered only after a flush that began after
// its group committed, the writer commits on while a flush runs, and a
// failed flush fails the requests it was to make durable.
func TestCommitterFlush(t *testing.T) {
	var committed atomic.Int64
	flushStarted := make(chan int64, 4) // groups committed when a flush began
	release := make(chan error)
	apply := func(context.Context, []*Request) error { committed.Add(1); return nil }
	flush := func() error {
		flushStarted <- committed.Load()
		return <-release
	}
	c := NewCommitter(apply, flush, 1, 1000, time.Hour)
	defer c.Close()
	submit := func(seq uint64) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := c.Submit(context.Background(), &Request{Node: "a", Seq: seq})
			done <- err
		}()
		return done
	}

	first := submit(1)
	if n := <-flushStarted; n != 1 {
		t.Fatalf("flush began after %d commits, want 1", n)
	}
	select {
	case err := <-first:
		t.Fatalf("answered (%v) before its flush ended", err)
	default:
	}
	second := submit(2)
	for committed.Load() < 2 {
		time.Sleep(time.Millisecond) // the writer commits while the flush is held
	}
	release <- nil
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := <-flushStarted; n != 2 {
		t.Fatalf("second flush began after %d commits, want 2", n)
	}
	release <- errors.New("disk gone")
	if err := <-second; err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("after a failed flush: %v, want its error", err)
	}
}
