package store

import (
	"context"
	"fmt"
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
	c := NewCommitter(apply, 1, 1000, time.Hour)
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
