// Package cgroups tells which container and pod a process belongs to from its
// cgroup path, as /proc/PID/cgroup shows it.
//
// It knows the layouts kubelet and the container runtimes create on EKS
// nodes: containerd and CRI-O (and Docker, Podman), with the systemd or the
// cgroupfs cgroup driver, on cgroup v1, hybrid and v2 hosts.
package cgroups

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Info is what a cgroup path says about the process in it.
type Info struct {
	// ContainerID is the runtime's full container id (64 hex digits for
	// containerd, CRI-O and Docker); empty for host processes.
	ContainerID string
	// Runtime names the runtime from the path's prefix: "containerd",
	// "cri-o", "docker", "podman", or "" when the path has a bare id
	// (cgroupfs driver) or none.
	Runtime string
	// PodUID is the Kubernetes pod's uid, with dashes, as the API shows it.
	PodUID string
	// Path is the cgroup path the answer was read from.
	Path string
}

// maxLine bounds one line of /proc/PID/cgroup; the kernel caps paths at
// PATH_MAX.
const maxLine = 64 << 10

// Parse reads /proc/PID/cgroup ("hierarchy-ID:controllers:path" per line) and
// identifies the container and pod. It prefers the unified (v2) hierarchy,
// then name=systemd, then the other v1 hierarchies in file order, and takes
// the first path that names a container; failing that, the first that
// names a pod.
func Parse(r io.Reader) (Info, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	var v2, systemd, other []string
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			return Info{}, fmt.Errorf("cgroup line %d: no hierarchy separator", n)
		}
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return Info{}, fmt.Errorf("cgroup line %d: hierarchy id %q: %w", n, id, err)
		}
		ctrl, path, ok := strings.Cut(rest, ":")
		if !ok {
			return Info{}, fmt.Errorf("cgroup line %d: no controller separator", n)
		}
		switch {
		case id == "0" && ctrl == "":
			v2 = append(v2, path)
		case ctrl == "name=systemd":
			systemd = append(systemd, path)
		default:
			other = append(other, path)
		}
	}
	if err := sc.Err(); err != nil {
		return Info{}, fmt.Errorf("cgroup: %w", err)
	}
	var best Info
	for _, p := range append(append(v2, systemd...), other...) {
		info := FromPath(p)
		if info.ContainerID != "" {
			return info, nil
		}
		if best.Path == "" || (best.PodUID == "" && info.PodUID != "") {
			best = info
		}
	}
	return best, nil
}

// runtimePrefixes maps a path component's prefix to the runtime that
// creates it. Order matters: the conmon scopes must match before "crio-".
var runtimePrefixes = []struct {
	prefix, runtime string
	container       bool
}{
	{"crio-conmon-", "cri-o", false},
	{"libpod-conmon-", "podman", false},
	{"cri-containerd-", "containerd", true},
	{"crio-", "cri-o", true},
	{"docker-", "docker", true},
	{"libpod-", "podman", true},
}

// FromPath identifies the container and pod in one cgroup path, such as
//
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope
//	/kubepods/besteffort/pod<uid>/<id>
//	/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>
func FromPath(path string) Info {
	info := Info{Path: path}
	for _, comp := range strings.Split(path, "/") {
		// containerd's systemd driver without a systemd scope writes
		// "slice:runtime:id" as one component.
		if slice, rest, ok := strings.Cut(comp, ":"); ok {
			if uid := podUID(slice); uid != "" {
				info.PodUID = uid
			}
			rt, id, ok := strings.Cut(rest, ":")
			if ok && isHexID(id, 12) {
				info.ContainerID, info.Runtime = id, runtimeName(rt)
			}
			continue
		}
		if uid := podUID(comp); uid != "" {
			info.PodUID = uid
			continue
		}
		if id, rt, ok := containerID(comp); ok {
			info.ContainerID, info.Runtime = id, rt
		}
	}
	return info
}

// containerID recognises one component naming a container.
func containerID(comp string) (id, runtime string, ok bool) {
	base := strings.TrimSuffix(comp, ".scope")
	for _, p := range runtimePrefixes {
		if rest, found := strings.CutPrefix(base, p.prefix); found {
			if !p.container || !isHexID(rest, 12) {
				return "", "", false
			}
			return rest, p.runtime, true
		}
	}
	// The cgroupfs driver names the container's cgroup by its bare id.
	if base == comp && isHexID(comp, 64) {
		return comp, "", true
	}
	return "", "", false
}

func runtimeName(rt string) string {
	switch rt {
	case "cri-containerd":
		return "containerd"
	case "crio":
		return "cri-o"
	case "docker":
		return "docker"
	case "libpod":
		return "podman"
	}
	return rt
}

// podUID recognises a pod's cgroup: "pod<uid>" (cgroupfs) or
// "kubepods[-<qos>]-pod<uid with underscores>.slice" (systemd).
func podUID(comp string) string {
	var raw string
	if s, ok := strings.CutSuffix(comp, ".slice"); ok {
		i := strings.LastIndex(s, "-pod")
		if !strings.HasPrefix(s, "kubepods") || i < 0 {
			return ""
		}
		raw = strings.ReplaceAll(s[i+len("-pod"):], "_", "-")
	} else if s, ok := strings.CutPrefix(comp, "pod"); ok {
		raw = s
	} else {
		return ""
	}
	if !isPodUID(raw) {
		return ""
	}
	return raw
}

// isPodUID accepts a UUID (API-created pods) or 32 hex digits (static pods,
// whose uid is a hash of their manifest).
func isPodUID(s string) bool {
	switch len(s) {
	case 32:
		return isHexID(s, 32)
	case 36:
		for i := 0; i < len(s); i++ {
			c := s[i]
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if c != '-' {
					return false
				}
			} else if !isHex(c) {
				return false
			}
		}
		return true
	}
	return false
}

// isHexID accepts lowercase hex of min to 64 digits.
func isHexID(s string, min int) bool {
	if len(s) < min || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
