// Package inventory holds the agent's inventory sources: OS facts, packages
// and listening ports. Each file registers one source.
package inventory

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const maxSmallFile = 64 << 10

func init() {
	source.Register(source.Source{Name: "os", Phase: source.Facts, Collect: collectOS})
}

// collectOS gathers the node's identity: os-release through the host root,
// kernel and architecture from uname(2), boot id and time from the host's
// /proc.
func collectOS(_ context.Context, env *source.Env, _ *nodewardv1.Snapshot) (*nodewardv1.Snapshot, error) {
	node := &nodewardv1.Node{}
	var errs []error
	if env.Tracing != nil {
		node.Tracing = env.Tracing()
	}

	osr, err := ReadOSRelease(env.Root)
	if err != nil {
		errs = append(errs, err)
	}
	node.Os = osr

	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		errs = append(errs, fmt.Errorf("uname: %w", err))
	} else {
		node.KernelRelease = unix.ByteSliceToString(uts.Release[:])
		node.Architecture = unix.ByteSliceToString(uts.Machine[:])
		node.Hostname = unix.ByteSliceToString(uts.Nodename[:])
	}

	if b, err := os.ReadFile(filepath.Join(env.Proc, "sys/kernel/random/boot_id")); err != nil {
		errs = append(errs, fmt.Errorf("boot id: %w", err))
	} else {
		node.BootId = strings.TrimSpace(string(b))
	}
	if bt, err := readBootTime(filepath.Join(env.Proc, "stat")); err != nil {
		errs = append(errs, err)
	} else {
		node.BootTime = timestamppb.New(bt)
	}

	if b, err := env.Root.ReadFile("/etc/machine-id", maxSmallFile); err == nil {
		node.MachineId = strings.TrimSpace(string(b))
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("machine id: %w", err))
	}

	// EKS-optimized AMIs describe themselves in a shell-style file.
	if b, err := env.Root.ReadFile("/etc/eks/release", maxSmallFile); err == nil {
		if fields, _, perr := ParseOSRelease(bytes.NewReader(b)); perr == nil {
			node.EksRelease = fields
		} else {
			errs = append(errs, fmt.Errorf("/etc/eks/release: %w", perr))
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("/etc/eks/release: %w", err))
	}
	return &nodewardv1.Snapshot{Node: node}, errors.Join(errs...)
}

// ReadOSRelease reads /etc/os-release, or /usr/lib/os-release when the first
// is missing, as os-release(5) prescribes.
func ReadOSRelease(root *hostfs.Root) (*nodewardv1.OsRelease, error) {
	var firstErr error
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := root.ReadFile(p, maxSmallFile)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		fields, skipped, err := ParseOSRelease(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		osr := &nodewardv1.OsRelease{
			Id:              fields["ID"],
			VersionId:       fields["VERSION_ID"],
			PrettyName:      fields["PRETTY_NAME"],
			Name:            fields["NAME"],
			Version:         fields["VERSION"],
			VersionCodename: fields["VERSION_CODENAME"],
			VariantId:       fields["VARIANT_ID"],
			BuildId:         fields["BUILD_ID"],
			Fields:          fields,
			SourcePath:      p,
		}
		if len(skipped) > 0 {
			return osr, fmt.Errorf("%s: skipped %s", p, strings.Join(skipped, "; "))
		}
		return osr, nil
	}
	if firstErr != nil {
		return nil, fmt.Errorf("os-release: %w", firstErr)
	}
	return nil, errors.New("os-release: neither /etc/os-release nor /usr/lib/os-release exists")
}

// readBootTime reads the btime line of /proc/stat.
func readBootTime(path string) (time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("boot time: %s: %w", path, err)
			}
			return time.Unix(secs, 0), nil
		}
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, fmt.Errorf("boot time: %s: %w", path, err)
	}
	return time.Time{}, fmt.Errorf("boot time: no btime line in %s", path)
}
