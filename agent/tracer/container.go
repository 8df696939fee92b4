package tracer

import (
	"path"
	"strings"
)

// containerFromCgroup finds the container id and pod uid in a cgroup path,
// for containerd, cri-o and docker under the systemd and cgroupfs drivers:
//
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope
//	/kubepods/burstable/pod<uid>/<id>
//	/kubepods.slice/kubepods-pod<uid>.slice/crio-<id>.scope
func containerFromCgroup(p string) (id, pod string) {
	if p == "" || p == "/" {
		return "", ""
	}
	leaf := path.Base(p)
	id = containerID(leaf)
	if id == "" {
		return "", ""
	}
	for dir := path.Dir(p); dir != "/" && dir != "."; dir = path.Dir(dir) {
		if uid := podUID(path.Base(dir)); uid != "" {
			return id, uid
		}
	}
	return id, ""
}

func containerID(leaf string) string {
	s := strings.TrimSuffix(leaf, ".scope")
	for _, prefix := range []string{"cri-containerd-", "crio-", "docker-", "libpod-", "containerd-"} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			if strings.HasPrefix(rest, "conmon-") {
				return "" // cri-o's monitor, not the container
			}
			s = rest
			break
		}
	}
	if isHexID(s) {
		return s
	}
	return ""
}

func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// podUID reads "pod<uid>" (cgroupfs) or "kubepods[-qos]-pod<uid_with_underscores>.slice" (systemd).
func podUID(name string) string {
	name = strings.TrimSuffix(name, ".slice")
	i := strings.LastIndex(name, "pod")
	if i < 0 || (i > 0 && name[i-1] != '-') {
		return ""
	}
	uid := strings.ReplaceAll(name[i+3:], "_", "-")
	if len(uid) != 36 || strings.Count(uid, "-") != 4 {
		return ""
	}
	return uid
}
