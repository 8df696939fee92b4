// Package source runs the agent's sources: independent units that each read
// part of the node (OS facts, packages, ports, posture checks) and return a
// partial snapshot. One failing source reports its error and never stops the
// others.
package source

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Env is what a source may read: the host root and the host's /proc.
type Env struct {
	Root *hostfs.Root
	// Proc is the host's procfs mount, "/proc" with hostPID.
	Proc string
}

// Source is one unit of collection. Collect returns the part of the
// snapshot it owns; on error it may still return what it got.
type Source struct {
	Name    string
	Collect func(ctx context.Context, env *Env) (*nodewardv1.Snapshot, error)
}

var (
	mu       sync.Mutex
	registry = map[string]Source{}
)

// Register adds a source; sources register themselves from init.
func Register(s Source) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[s.Name]; dup {
		panic("source registered twice: " + s.Name)
	}
	registry[s.Name] = s
}

// Names lists the registered sources, sorted.
func Names() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Run runs the named sources (all when only is empty) concurrently and
// merges their parts, in name order, into one snapshot.
func Run(ctx context.Context, env *Env, only []string) (*nodewardv1.Snapshot, error) {
	names := Names()
	if len(only) > 0 {
		for _, n := range only {
			if !slices.Contains(names, n) {
				return nil, fmt.Errorf("unknown source %q (known: %v)", n, names)
			}
		}
		names = only
		sort.Strings(names)
	}
	type result struct {
		part   *nodewardv1.Snapshot
		status *nodewardv1.SourceStatus
	}
	results := make([]result, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		mu.Lock()
		s := registry[name]
		mu.Unlock()
		wg.Go(func() {
			start := time.Now()
			part, err := s.Collect(ctx, env)
			st := &nodewardv1.SourceStatus{Name: name, Ok: err == nil, DurationMicros: uint64(time.Since(start).Microseconds())}
			if err != nil {
				st.Error = err.Error()
			}
			results[i] = result{part, st}
		})
	}
	wg.Wait()
	snap := &nodewardv1.Snapshot{CollectedAt: timestamppb.Now()}
	for _, r := range results {
		if r.part != nil {
			proto.Merge(snap, r.part)
		}
		snap.Sources = append(snap.Sources, r.status)
	}
	return snap, nil
}
