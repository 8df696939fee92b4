package inventory

import (
	"context"

	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	source.Register(source.Source{Name: "ssh-activity", Phase: source.Facts, Collect: collectSSHActivity})
}

// collectSSHActivity reports the last day's SSH sessions as the agent's SSH
// tracking saw them, or why there is no such tracking.
func collectSSHActivity(_ context.Context, env *source.Env, _ *nodewardv1.Snapshot) (*nodewardv1.Snapshot, error) {
	if env.SSHActivity == nil {
		reason := env.SSHUnavailable
		if reason == "" {
			reason = "SSH sessions are traced only by a running agent (nodeward-agent run)"
		}
		return &nodewardv1.Snapshot{SshActivity: &nodewardv1.SshActivity{Reason: reason}}, nil
	}
	return &nodewardv1.Snapshot{SshActivity: env.SSHActivity()}, nil
}
