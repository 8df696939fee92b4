// Package posture turns host facts into findings. Each check lives in its
// own file, registers itself from init, reads only through the host root,
// and returns findings; the runner runs every check concurrently after the
// facts sources and never lets one check stop another.
package posture

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"

	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// Check is one posture check. It may return several findings (one per
// check_id it owns).
type Check struct {
	// Name identifies the check in logs and errors, e.g. "sshd".
	Name string
	// Reads documents what the check reads, e.g. "/etc/ssh/sshd_config".
	Reads []string
	// Run judges the node. facts holds what the facts sources found; it must
	// not be modified.
	Run func(ctx context.Context, env *source.Env, facts *nodewardv1.Snapshot) []*nodewardv1.Finding
}

var (
	mu     sync.Mutex
	checks = map[string]Check{}
)

// Register adds a check; checks register themselves from init.
func Register(c Check) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := checks[c.Name]; dup {
		panic("posture check registered twice: " + c.Name)
	}
	checks[c.Name] = c
}

func init() {
	source.Register(source.Source{Name: "posture", Phase: source.Checks, Collect: collect})
}

// collect runs every check concurrently; a check that panics yields an
// error finding instead of taking the agent down.
func collect(ctx context.Context, env *source.Env, facts *nodewardv1.Snapshot) (*nodewardv1.Snapshot, error) {
	mu.Lock()
	all := make([]Check, 0, len(checks))
	for _, c := range checks {
		all = append(all, c)
	}
	mu.Unlock()
	results := make([][]*nodewardv1.Finding, len(all))
	var wg sync.WaitGroup
	for i, c := range all {
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					results[i] = []*nodewardv1.Finding{{
						CheckId:  c.Name + ".internal",
						Title:    fmt.Sprintf("check %s failed", c.Name),
						Severity: nodewardv1.Severity_SEVERITY_INFO,
						Status:   nodewardv1.FindingStatus_FINDING_STATUS_ERROR,
						Evidence: []*nodewardv1.Evidence{{Source: c.Name, Reason: fmt.Sprintf("panic: %v\n%s", r, debug.Stack())}},
					}}
				}
			}()
			results[i] = c.Run(ctx, env, facts)
		})
	}
	wg.Wait()
	var findings []*nodewardv1.Finding
	for _, r := range results {
		findings = append(findings, r...)
	}
	sort.SliceStable(findings, func(i, j int) bool { return findings[i].GetCheckId() < findings[j].GetCheckId() })
	return &nodewardv1.Snapshot{Findings: findings}, nil
}
