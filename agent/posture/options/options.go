// Package options holds the posture checks' settings: thresholds,
// allow-lists and opt-ins. It imports nothing of the agent, so the host
// environment the sources receive can carry it (source.Env.Posture) and
// command-line flags can fill it, without a global.
package options

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Posture configures the checks. The zero value is not meaningful; start
// from Default.
type Posture struct {
	// PatchWarnDays and PatchFailDays: package, kernel and image ages that
	// warn (fail, low) and fail (medium).
	PatchWarnDays, PatchFailDays int
	// AllowPorts extend the listener allow-list.
	AllowPorts []Port
	// UnwantedPackages extend the list of packages a node should not carry.
	UnwantedPackages []string
	// VolumeLookup, when set, asks the cloud whether EBS volumes are
	// encrypted: the opt-in (agent/posture/ec2.VolumeLookup asks EC2 with
	// the node role, which needs ec2:DescribeVolumes).
	VolumeLookup VolumeLookup
}

// Volume is what the cloud says of one EBS volume.
type Volume struct {
	Encrypted bool
	KMSKeyID  string
}

// VolumeLookup asks the cloud about EBS volumes by id ("vol-...").
type VolumeLookup func(ctx context.Context, ids []string) (map[string]Volume, error)

// Default is the configuration the checks use when none is given.
func Default() Posture {
	return Posture{PatchWarnDays: 30, PatchFailDays: 90}
}

// Port is one allow-list entry.
type Port struct {
	// Protocol is "tcp" or "udp".
	Protocol string
	// Number 0 allows every port of Process.
	Number uint32
	// Process, when set, must own the listener too.
	Process string
}

// ParsePort reads "tcp/22", "udp/53/node-cache" or "tcp/*/nodeward-agent".
func ParsePort(s string) (Port, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Port{}, fmt.Errorf("port %q: want PROTO/PORT[/PROCESS]", s)
	}
	p := Port{Protocol: strings.ToLower(parts[0])}
	if p.Protocol != "tcp" && p.Protocol != "udp" {
		return Port{}, fmt.Errorf("port %q: protocol must be tcp or udp", s)
	}
	if parts[1] != "*" {
		n, err := strconv.ParseUint(parts[1], 10, 16)
		if err != nil || n == 0 {
			return Port{}, fmt.Errorf("port %q: bad port number", s)
		}
		p.Number = uint32(n)
	}
	if len(parts) == 3 {
		p.Process = parts[2]
		if p.Process == "" {
			return Port{}, fmt.Errorf("port %q: empty process name", s)
		}
	}
	if p.Number == 0 && p.Process == "" {
		return Port{}, fmt.Errorf("port %q: \"*\" needs a process name", s)
	}
	return p, nil
}

// Validate checks the thresholds.
func (p Posture) Validate() error {
	if p.PatchWarnDays <= 0 || p.PatchFailDays < p.PatchWarnDays {
		return fmt.Errorf("patch thresholds: want 0 < warn (%d) <= fail (%d)", p.PatchWarnDays, p.PatchFailDays)
	}
	return nil
}
