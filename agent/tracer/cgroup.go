package tracer

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nodeward/nodeward/agent/cgroups"
	"golang.org/x/sys/unix"
)

// hierarchy is a cgroup hierarchy the BPF side reports an id in.
type hierarchy int

const (
	hierV2     hierarchy = iota // the cgroup2 (unified) hierarchy: bpf_get_current_cgroup_id
	hierMemory                  // the cgroup v1 memory controller's hierarchy
	numHier
)

// fileidKernfs is the file handle type of kernfs (FILEID_KERNFS): a handle
// holding a cgroup's id opens that cgroup's directory.
const fileidKernfs = 0xfe

// cgroupResolver turns the cgroup ids BPF reports into paths, by opening
// the cgroup directory through a kernfs file handle (exact, no scanning).
// Results are cached, with the container and pod the path names: a
// cgroup's path never changes for its id.
type cgroupResolver struct {
	proc string

	once   sync.Once
	mounts [numHier]string // each hierarchy's directory, as this process reaches it
	points [numHier]string // each hierarchy's mount point on the host
	err    error

	mu    sync.Mutex
	infos map[uint64]cgroups.Info
}

func newCgroupResolver(proc string) *cgroupResolver {
	return &cgroupResolver{proc: proc, infos: map[uint64]cgroups.Info{}}
}

func (r *cgroupResolver) init() {
	f, err := os.Open(procPath(r.proc, "1", "mountinfo"))
	if err != nil {
		r.err = fmt.Errorf("cgroup mounts: %w", err)
		return
	}
	defer f.Close()
	m, err := parseCgroupMounts(f)
	if err != nil {
		r.err = err
		return
	}
	// The host's mounts, reached through PID 1's root, so the agent sees the
	// host's hierarchies even from a container of its own.
	root := procPath(r.proc, "1", "root")
	for h, p := range m {
		if p == "" {
			continue
		}
		r.points[h] = p
		r.mounts[h] = filepath.Join(root, p)
		if _, err := os.Stat(r.mounts[h]); err != nil {
			r.mounts[h] = p
		}
	}
}

// info returns the cgroup's path within its hierarchy ("/kubepods/...") and
// the container and pod it names; an empty Path if the cgroup cannot be
// found (gone already, or the hierarchy is not mounted).
func (r *cgroupResolver) info(h hierarchy, id uint64) cgroups.Info {
	if id == 0 {
		return cgroups.Info{}
	}
	r.once.Do(r.init)
	if r.mounts[h] == "" {
		return cgroups.Info{}
	}
	key := id<<1 | uint64(h) // kernfs ids leave the top bit free; keep the two hierarchies apart
	r.mu.Lock()
	info, ok := r.infos[key]
	r.mu.Unlock()
	if ok {
		return info
	}
	p := r.open(h, id)
	if p == "" {
		return cgroups.Info{}
	}
	info = cgroups.FromPath(p)
	r.mu.Lock()
	if len(r.infos) > 65536 {
		clear(r.infos) // bounded: cgroups come and go on a busy node
	}
	r.infos[key] = info
	r.mu.Unlock()
	return info
}

func (r *cgroupResolver) open(h hierarchy, id uint64) string {
	mfd, err := unix.Open(r.mounts[h], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(mfd)
	var handle [8]byte
	binary.LittleEndian.PutUint64(handle[:], id)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(fileidKernfs, handle[:]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return ""
	}
	return relCgroupPath(link, r.mounts[h], r.points[h])
}

// relCgroupPath makes the path of an opened cgroup directory relative to its
// hierarchy's mount, rooted at "/": link starts with one of prefixes (the
// directory as reached, or the mount point itself).
func relCgroupPath(link string, prefixes ...string) string {
	for _, prefix := range prefixes {
		if rest, ok := strings.CutPrefix(link, prefix); ok && (rest == "" || rest[0] == '/') {
			if rest == "" {
				return "/"
			}
			return rest
		}
	}
	return link
}

// parseCgroupMounts finds the cgroup2 mount and the cgroup v1 memory
// controller's mount in a mountinfo file (proc(5)).
func parseCgroupMounts(r io.Reader) ([numHier]string, error) {
	var out [numHier]string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 1 {
			continue
		}
		mountPoint := unescapeMountinfo(f[4])
		switch g[0] {
		case "cgroup2":
			if out[hierV2] == "" {
				out[hierV2] = mountPoint
			}
		case "cgroup":
			if len(g) >= 3 && out[hierMemory] == "" {
				for _, o := range strings.Split(g[2], ",") {
					if o == "memory" {
						out[hierMemory] = mountPoint
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}
