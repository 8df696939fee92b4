package posture

import (
	"context"

	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "lsm",
		Reads: []string{"/sys/fs/selinux/enforce", selinuxConfigPath, apparmorEnabledPath, apparmorProfilesPath},
		Run:   runLSM,
	})
}

// runLSM passes when either mandatory access control LSM enforces: a node
// needs one of them, not both.
func runLSM(_ context.Context, env *source.Env, _ *nodewardv1.Snapshot) []*nodewardv1.Finding {
	return []*nodewardv1.Finding{judgeLSM(readSELinux(env.Root), readAppArmor(env.Root))}
}

func judgeLSM(se selinuxState, aa apparmorState) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "lsm.enforcing",
		Title:       "A mandatory access control LSM (SELinux or AppArmor) enforces on the node",
		Severity:    sevHigh,
		Remediation: "Run the node with SELinux enforcing (Amazon Linux, Bottlerocket, RHEL) or AppArmor with enforce-mode profiles (Ubuntu, Debian), so a container breakout meets a second wall.",
		References:  []*nodewardv1.Reference{refEKS("Use SELinux"), refCIS("Ensure a Mandatory Access Control system is installed")},
	}
	if se.runtimeErr == nil {
		f.Evidence = append(f.Evidence, se.runtime.Evidence)
	} else {
		f.Evidence = append(f.Evidence, evd(selinuxFSPath, "", "cannot tell: "+se.runtimeErr.Error()))
	}
	f.Evidence = append(f.Evidence, aa.Evidence...)
	if aa.Err != nil {
		f.Evidence = append(f.Evidence, evd(apparmorProfilesPath, "", "cannot tell: "+aa.Err.Error()))
	}
	switch {
	case se.runtimeErr == nil && se.runtime.Mode == "enforcing":
		f.Status = statPass
		f.Evidence = append(f.Evidence, evd("decision", "selinux", "SELinux enforces"))
	case aa.Err == nil && aa.Enforcing():
		f.Status = statPass
		f.Evidence = append(f.Evidence, evd("decision", "apparmor", "AppArmor enforces profiles"))
	case se.runtimeErr != nil || aa.Err != nil:
		f.Status = statUnknown
		f.Evidence = append(f.Evidence, evd("decision", "", "neither LSM was seen enforcing, and one of them could not be read"))
	default:
		f.Status = statFail
		f.Evidence = append(f.Evidence, evd("decision", "", "neither SELinux nor AppArmor enforces"))
	}
	return f
}
