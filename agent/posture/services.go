package posture

import (
	"context"

	"github.com/nodeward/nodeward/agent/posture/systemd"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// serviceState is what systemd and /proc say of one daemon.
type serviceState struct {
	installed, running, enabled, masked bool
	// runningKnown: running is an answer, from D-Bus or a live host /proc.
	runningKnown bool
	evidence     []*nodewardv1.Evidence
}

// readService asks systemd (D-Bus, else unit files) about units and scans
// the host's /proc for comms when D-Bus did not answer.
func readService(ctx context.Context, env *source.Env, units, comms []string) serviceState {
	var s serviceState
	us, busErr, err := systemd.State(ctx, env.Root, units)
	if busErr != nil {
		s.evidence = append(s.evidence, evd(systemd.SystemBusPath, "", "systemd not reachable over D-Bus ("+busErr.Error()+"); unit state read from unit files, running state from processes"))
	}
	if err != nil {
		s.evidence = append(s.evidence, evd("/etc/systemd/system", "", "unit files: "+err.Error()))
	}
	for _, u := range us {
		if !u.Exists() {
			continue
		}
		s.installed = true
		s.running = s.running || u.Active()
		s.enabled = s.enabled || u.Enabled()
		s.masked = s.masked || u.Masked()
		s.evidence = append(s.evidence, evd("systemd "+u.Via+": "+u.Name, u.String(), ""))
	}
	if busErr == nil {
		s.runningKnown = true
		return s
	}
	procs, err := findProcs(env.Proc, comms...)
	if err != nil {
		s.evidence = append(s.evidence, evd(env.Proc, "", "process scan: "+err.Error()))
		return s
	}
	s.runningKnown = hostProcMounted(env.Proc)
	for _, p := range procs {
		s.running, s.installed = true, true
		s.evidence = append(s.evidence, evd(env.Proc, p.String(), "the process runs"))
	}
	return s
}
