package posture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "apparmor",
		Reads: []string{apparmorEnabledPath, apparmorProfilesPath},
		Run:   runAppArmor,
	})
}

const (
	apparmorEnabledPath  = "/sys/module/apparmor/parameters/enabled"
	apparmorProfilesPath = "/sys/kernel/security/apparmor/profiles"
)

// AppArmorProfiles counts the loaded profiles by mode.
type AppArmorProfiles struct {
	// ByMode: enforce, complain, kill, unconfined, prompt, ... as the
	// kernel prints them.
	ByMode map[string]int
	// Enforcing lists up to a few enforce-mode profile names, for evidence.
	Enforcing []string
	Total     int
}

// ParseAppArmorProfiles reads securityfs's apparmor/profiles: one
// "NAME (MODE)" line per loaded profile. A name may hold spaces and
// parentheses, so the mode is the last parenthesised word.
func ParseAppArmorProfiles(r io.Reader) (AppArmorProfiles, error) {
	p := AppArmorProfiles{ByMode: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		i := strings.LastIndex(line, " (")
		if i < 0 || !strings.HasSuffix(line, ")") {
			return p, fmt.Errorf("profiles line %d: no (mode) in %q", p.Total+1, truncate(line, 80))
		}
		name, mode := line[:i], line[i+2:len(line)-1]
		p.ByMode[mode]++
		p.Total++
		if mode == "enforce" && len(p.Enforcing) < 5 {
			p.Enforcing = append(p.Enforcing, name)
		}
	}
	if err := sc.Err(); err != nil {
		return p, fmt.Errorf("parse profiles: %w", err)
	}
	return p, nil
}

func (p AppArmorProfiles) String() string {
	modes := make([]string, 0, len(p.ByMode))
	for m := range p.ByMode {
		modes = append(modes, m)
	}
	sort.Strings(modes)
	parts := make([]string, 0, len(modes))
	for _, m := range modes {
		parts = append(parts, fmt.Sprintf("%s=%d", m, p.ByMode[m]))
	}
	return strings.Join(parts, " ")
}

// apparmorState is what the kernel says of AppArmor.
type apparmorState struct {
	// Present: the kernel has the AppArmor module.
	Present  bool
	Enabled  bool
	Profiles AppArmorProfiles
	Evidence []*nodewardv1.Evidence
	Err      error
}

// Enforcing reports whether AppArmor confines anything.
func (s apparmorState) Enforcing() bool { return s.Enabled && s.Profiles.ByMode["enforce"] > 0 }

func readAppArmor(root *hostfs.Root) apparmorState {
	var s apparmorState
	b, err := root.ReadFile(apparmorEnabledPath, 64)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.Evidence = append(s.Evidence, evd(apparmorEnabledPath, "", "not present: the AppArmor module is not in this kernel"))
		return s
	case err != nil:
		s.Err = fmt.Errorf("%s: %w", apparmorEnabledPath, err)
		return s
	}
	s.Present = true
	v := strings.TrimSpace(string(b))
	s.Enabled = v == "Y"
	s.Evidence = append(s.Evidence, evd(apparmorEnabledPath, truncate(v, 40), map[bool]string{true: "AppArmor is enabled", false: "AppArmor is built in but disabled"}[s.Enabled]))
	if !s.Enabled {
		return s
	}
	f, err := root.Open(apparmorProfilesPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.Err = fmt.Errorf("%s: %w (is securityfs mounted at /sys/kernel/security?)", apparmorProfilesPath, err)
		} else {
			s.Err = fmt.Errorf("%s: %w", apparmorProfilesPath, err)
		}
		return s
	}
	defer func() { _ = f.Close() }()
	s.Profiles, err = ParseAppArmorProfiles(io.LimitReader(f, 64<<20))
	if err != nil {
		s.Err = fmt.Errorf("%s: %w", apparmorProfilesPath, err)
		return s
	}
	reason := "profiles loaded, by mode"
	if len(s.Profiles.Enforcing) > 0 {
		reason += "; enforcing e.g. " + strings.Join(s.Profiles.Enforcing, ", ")
	}
	s.Evidence = append(s.Evidence, evd(apparmorProfilesPath, s.Profiles.String(), reason))
	return s
}

func runAppArmor(_ context.Context, env *source.Env, _ *nodewardv1.Snapshot) []*nodewardv1.Finding {
	return []*nodewardv1.Finding{judgeAppArmor(readAppArmor(env.Root))}
}

func judgeAppArmor(s apparmorState) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "apparmor.profiles",
		Title:       "AppArmor is enabled with profiles in enforce mode",
		Severity:    sevMedium,
		Evidence:    s.Evidence,
		Remediation: "Boot with apparmor=1 security=apparmor, install apparmor and its profiles, and load them in enforce mode (`aa-enforce /etc/apparmor.d/*`); keep the container runtime's default profile on.",
		References:  []*nodewardv1.Reference{refEKS("Use an OS optimized for running containers"), refCIS("Ensure all AppArmor Profiles are in enforce or complain mode")},
	}
	switch {
	case s.Err != nil:
		f.Status = statError
		f.Evidence = append(f.Evidence, evd("decision", "", s.Err.Error()))
	case !s.Present:
		f.Status = statNA
	case s.Enforcing():
		f.Status = statPass
	default:
		f.Status = statFail
	}
	return f
}
