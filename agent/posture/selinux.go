package posture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/opencontainers/selinux/go-selinux"
)

func init() {
	Register(Check{
		Name:  "selinux",
		Reads: []string{"/sys/fs/selinux/enforce", "/etc/selinux/config"},
		Run:   runSELinux,
	})
}

const (
	selinuxConfigPath = "/etc/selinux/config"
	selinuxFSPath     = "/sys/fs/selinux"
)

// SELinuxConfig is /etc/selinux/config: the mode and policy applied at boot.
type SELinuxConfig struct {
	// Mode is SELINUX=, lower-cased: enforcing, permissive or disabled.
	Mode string
	// Type is SELINUXTYPE=, the policy: targeted, mls, ...
	Type string
}

// ParseSELinuxConfig reads /etc/selinux/config as libselinux does: KEY=VALUE
// lines, '#' comments, surrounding quotes and blanks ignored, the last
// assignment winning.
func ParseSELinuxConfig(r io.Reader) (SELinuxConfig, error) {
	var c SELinuxConfig
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch strings.TrimSpace(k) {
		case "SELINUX":
			c.Mode = strings.ToLower(v)
		case "SELINUXTYPE":
			c.Type = v
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("parse %s: %w", selinuxConfigPath, err)
	}
	return c, nil
}

// selinuxRuntime is what the running kernel says.
type selinuxRuntime struct {
	// Mode: enforcing, permissive or disabled.
	Mode     string
	Evidence *nodewardv1.Evidence
}

// readSELinuxRuntime asks the kernel. On the live root ("/") it uses
// opencontainers/selinux, which finds selinuxfs wherever it is mounted;
// on any other root it reads the selinuxfs tree under that root, where a
// DaemonSet's /host/sys or a test's tree holds it.
func readSELinuxRuntime(root *hostfs.Root) (selinuxRuntime, error) {
	if root.Dir() == "/" {
		if !selinux.GetEnabled() {
			return selinuxRuntime{Mode: "disabled", Evidence: evd("opencontainers/selinux GetEnabled", "false", "no selinuxfs mounted with a policy loaded")}, nil
		}
		m := selinux.EnforceMode()
		v := fmt.Sprintf("EnforceMode=%d", m)
		// The contexts init and the agent run in show the policy at work
		// (an agent in spc_t/unconfined_t is expected for a privileged pod).
		if l, err := selinux.PidLabel(1); err == nil {
			v += " init=" + l
		}
		if l, err := selinux.CurrentLabel(); err == nil {
			v += " agent=" + l
		}
		switch m {
		case selinux.Enforcing:
			return selinuxRuntime{Mode: "enforcing", Evidence: evd("opencontainers/selinux", v, "SELinux enforces its policy")}, nil
		case selinux.Permissive:
			return selinuxRuntime{Mode: "permissive", Evidence: evd("opencontainers/selinux", v, "SELinux only logs denials")}, nil
		}
		return selinuxRuntime{}, fmt.Errorf("opencontainers/selinux: enabled but %s", v)
	}
	enforce := selinuxFSPath + "/enforce"
	b, err := root.ReadFile(enforce, 64)
	if errors.Is(err, fs.ErrNotExist) {
		return selinuxRuntime{Mode: "disabled", Evidence: evd(enforce, "", "selinuxfs is not mounted: SELinux is disabled in the kernel")}, nil
	}
	if err != nil {
		return selinuxRuntime{}, fmt.Errorf("%s: %w", enforce, err)
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "1":
		return selinuxRuntime{Mode: "enforcing", Evidence: evd(enforce, v, "SELinux enforces its policy")}, nil
	case "0":
		return selinuxRuntime{Mode: "permissive", Evidence: evd(enforce, v, "SELinux only logs denials")}, nil
	default:
		return selinuxRuntime{}, fmt.Errorf("%s: unexpected value %q", enforce, truncate(v, 40))
	}
}

// selinuxState is everything the SELinux findings are judged on.
type selinuxState struct {
	runtime      selinuxRuntime
	runtimeErr   error
	config       SELinuxConfig
	configExists bool
	configErr    error
}

func readSELinux(root *hostfs.Root) selinuxState {
	var s selinuxState
	s.runtime, s.runtimeErr = readSELinuxRuntime(root)
	b, err := root.ReadFile(selinuxConfigPath, smallFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		s.configErr = err
	default:
		s.configExists = true
		s.config, s.configErr = ParseSELinuxConfig(strings.NewReader(string(b)))
	}
	return s
}

func runSELinux(_ context.Context, env *source.Env, _ *nodewardv1.Snapshot) []*nodewardv1.Finding {
	return judgeSELinux(readSELinux(env.Root))
}

func judgeSELinux(s selinuxState) []*nodewardv1.Finding {
	mode := &nodewardv1.Finding{
		CheckId:     "selinux.mode",
		Title:       "SELinux enforces its policy",
		Severity:    sevMedium,
		Remediation: "Set SELINUX=enforcing in /etc/selinux/config and reboot (or `setenforce 1` now); on Bottlerocket SELinux is always enforcing.",
		References:  []*nodewardv1.Reference{refEKS("Use SELinux"), refCIS("Ensure the SELinux mode is enforcing")},
	}
	mismatch := &nodewardv1.Finding{
		CheckId:     "selinux.config-mismatch",
		Title:       "SELinux runtime mode matches the mode configured for the next boot",
		Severity:    sevLow,
		Remediation: "Make /etc/selinux/config say the mode the node runs in (enforcing), so a reboot does not change it.",
		References:  []*nodewardv1.Reference{refCIS("Ensure SELinux mode is not disabled")},
	}
	cfgEv := evd(selinuxConfigPath, "", "not present")
	if s.configErr != nil {
		cfgEv.Reason = "unreadable: " + s.configErr.Error()
	} else if s.configExists {
		cfgEv.Value = fmt.Sprintf("SELINUX=%s SELINUXTYPE=%s", s.config.Mode, s.config.Type)
		cfgEv.Reason = "mode and policy applied at boot"
	}

	if s.runtimeErr != nil {
		mode.Status, mismatch.Status = statError, statError
		e := evd(selinuxFSPath, "", s.runtimeErr.Error())
		mode.Evidence = []*nodewardv1.Evidence{e, cfgEv}
		mismatch.Evidence = []*nodewardv1.Evidence{e, cfgEv}
		return []*nodewardv1.Finding{mode, mismatch}
	}
	mode.Evidence = []*nodewardv1.Evidence{s.runtime.Evidence, cfgEv}
	mismatch.Evidence = []*nodewardv1.Evidence{s.runtime.Evidence, cfgEv}
	switch {
	case s.runtime.Mode == "enforcing":
		mode.Status = statPass
	case s.runtime.Mode == "disabled" && !s.configExists && s.configErr == nil:
		// Not an SELinux distribution (AppArmor's, or none): the LSM check
		// judges whether anything enforces.
		mode.Status = statNA
		mode.Evidence = append(mode.Evidence, evd("decision", "", "SELinux is neither enabled nor configured on this host; see lsm.enforcing"))
	default:
		mode.Status = statFail
	}

	switch {
	case s.configErr != nil:
		mismatch.Status = statUnknown
	case !s.configExists && s.runtime.Mode == "disabled":
		mismatch.Status = statNA
	case !s.configExists:
		mismatch.Status = statFail
		mismatch.Evidence = append(mismatch.Evidence, evd("decision", s.runtime.Mode, "SELinux runs but no boot configuration says so"))
	case s.config.Mode == s.runtime.Mode:
		mismatch.Status = statPass
	default:
		mismatch.Status = statFail
		mismatch.Evidence = append(mismatch.Evidence, evd("decision", "runtime "+s.runtime.Mode+", configured "+s.config.Mode,
			"the next boot will run SELinux "+s.config.Mode+", not "+s.runtime.Mode))
	}
	return []*nodewardv1.Finding{mode, mismatch}
}

// truncate shortens hostile values before they go into evidence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
