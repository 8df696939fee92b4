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
	"github.com/nodeward/nodeward/agent/posture/options"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Env is what a source may read: the host root and the host's /proc.
type Env struct {
	Root *hostfs.Root
	// Proc is the host's procfs mount, "/proc" with hostPID.
	Proc string
	// SSHActivity sums up the SSH sessions the running agent traced; nil
	// when nothing traces them (report mode, or tracking unavailable).
	SSHActivity func() *nodewardv1.SshActivity
	// SSHUnavailable says why SSHActivity is nil, when it is.
	SSHUnavailable string
	// Pods names the pod and container behind a container id from the
	// container runtime (the agent's CRI cache); nil in report mode.
	Pods PodNamer
	// Posture holds the checks' thresholds, allow-lists and opt-ins; nil
	// means the defaults.
	Posture *options.Posture
	// Tracing reports the running agent's eBPF tracing, for the node facts
	// (and the check that judges them); nil in report mode.
	Tracing func() *nodewardv1.TracingStatus
}

// PodNamer looks up a container id's pod name, namespace and container name
// from a cache, without blocking; the returned Pod is shared and only read.
type PodNamer interface {
	Lookup(containerID string) (*nodewardv1.Pod, bool)
}

// Phase orders sources: every Facts source runs (concurrently) before any
// Checks source, and checks see what the facts sources found.
type Phase int

const (
	// Facts sources read the node: OS facts, packages, ports.
	Facts Phase = iota
	// Checks sources judge the node, given the facts gathered so far.
	Checks
)

// Source is one unit of collection. Collect returns the part of the
// snapshot it owns; on error it may still return what it got. facts is nil
// in the Facts phase and the merged facts in the Checks phase; it must not
// be modified.
type Source struct {
	Name    string
	Phase   Phase
	Collect func(ctx context.Context, env *Env, facts *nodewardv1.Snapshot) (*nodewardv1.Snapshot, error)
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

// Run runs the named sources (all when only is empty), each phase
// concurrently, and merges their parts, in name order, into one snapshot.
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
	snap := &nodewardv1.Snapshot{CollectedAt: timestamppb.Now()}
	for _, phase := range []Phase{Facts, Checks} {
		var batch []Source
		mu.Lock()
		for _, n := range names {
			if registry[n].Phase == phase {
				batch = append(batch, registry[n])
			}
		}
		mu.Unlock()
		var facts *nodewardv1.Snapshot
		if phase == Checks {
			facts = snap
		}
		runPhase(ctx, env, batch, facts, snap)
	}
	return snap, nil
}

// runPhase runs batch concurrently and merges the parts into snap.
func runPhase(ctx context.Context, env *Env, batch []Source, facts, snap *nodewardv1.Snapshot) {
	type result struct {
		part   *nodewardv1.Snapshot
		status *nodewardv1.SourceStatus
	}
	results := make([]result, len(batch))
	var wg sync.WaitGroup
	for i, s := range batch {
		wg.Go(func() {
			start := time.Now()
			part, err := s.Collect(ctx, env, facts)
			st := &nodewardv1.SourceStatus{Name: s.Name, Ok: err == nil, DurationMicros: uint64(time.Since(start).Microseconds())}
			if err != nil {
				st.Error = err.Error()
			}
			results[i] = result{part, st}
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.part != nil {
			proto.Merge(snap, r.part)
		}
		snap.Sources = append(snap.Sources, r.status)
	}
}
