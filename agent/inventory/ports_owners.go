package inventory

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
)

// procEntry is one host process as the owner search sees it.
type procEntry struct {
	pid  int
	name string // the decimal pid, its directory under /proc
	// netns is the inode of the process's network namespace, 0 if unknown.
	netns uint64
	// uid owns /proc/PID: the process's effective uid (root for a process
	// that is not dumpable).
	uid uint32
	// next is the lowest file descriptor not yet read; -1 once all are.
	next int
}

// listProcs reads the process directories of the host's /proc with their
// network namespace and owner. Processes that vanish meanwhile are skipped.
func listProcs(procDir *os.File) ([]*procEntry, error) {
	names, err := procDir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", procDir.Name(), err)
	}
	procFD := int(procDir.Fd())
	procs := make([]*procEntry, 0, len(names))
	buf := make([]byte, 64)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(procFD, name, &st, 0); err != nil {
			continue
		}
		p := &procEntry{pid: pid, name: name, uid: st.Uid}
		if n, err := unix.Readlinkat(procFD, name+"/ns/net", buf); err == nil {
			p.netns, _ = parseNSLink(buf[:n], "net")
		}
		procs = append(procs, p)
	}
	slices.SortFunc(procs, func(a, b *procEntry) int { return a.pid - b.pid })
	return procs, nil
}

// fdWindows are the bounds of the rounds the owner search reads file
// descriptors in. Listening sockets are opened early in a process's life,
// at low descriptors, while a busy server's thousands of connections sit
// above them: every process's low descriptors are read before any
// process's high ones.
var fdWindows = []int{64, 1024, 1 << 31}

// ownerSearch maps listening sockets to a process holding each, reading
// /proc/PID/fd no more than it must. It stops as soon as every socket has
// an owner. Each round reads one window of descriptors, first in the
// processes that share a still-unowned socket's network namespace and uid
// (the socket's creator usually holds it), then in the others. Sockets
// no readable process holds (kernel sockets, or a process the agent may not
// inspect) are searched for everywhere before they are left without owner.
type ownerSearch struct {
	procFD int
	procs  []*procEntry
	// unmatched maps a socket inode to the ports still without owner.
	unmatched map[uint64]*nodewardv1.ListeningPort
	// wanted counts unowned sockets by network namespace and uid.
	wanted map[nsUID]int
	dents  []byte
	link   []byte

	fdsRead, visited, denied int
	// deniedPids are the first few processes whose descriptors the agent
	// may not read.
	deniedPids []int
}

type nsUID struct {
	netns uint64
	uid   uint32
}

func newOwnerSearch(procFD int, procs []*procEntry, ports []*nodewardv1.ListeningPort) *ownerSearch {
	s := &ownerSearch{
		procFD:    procFD,
		procs:     procs,
		unmatched: map[uint64]*nodewardv1.ListeningPort{},
		wanted:    map[nsUID]int{},
		dents:     make([]byte, 4096),
		link:      make([]byte, 128),
	}
	for _, p := range ports {
		if p.SocketInode == 0 {
			continue
		}
		ns, _ := parseNSLink([]byte(p.Netns), "net")
		s.unmatched[p.SocketInode] = p
		s.wanted[nsUID{ns, p.Uid}]++
	}
	return s
}

func (s *ownerSearch) run(ctx context.Context) error {
	for _, end := range fdWindows {
		for _, preferred := range []bool{true, false} {
			for _, p := range s.procs {
				if len(s.unmatched) == 0 {
					return nil
				}
				if p.next < 0 || p.next >= end {
					continue
				}
				if (s.wanted[nsUID{p.netns, p.uid}] > 0 && p.netns != 0) != preferred {
					continue
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				s.scan(p, end)
			}
		}
	}
	return nil
}

// scan reads p's file descriptors from p.next up to end.
func (s *ownerSearch) scan(p *procEntry, end int) {
	if p.next == 0 {
		s.visited++
	}
	dfd, err := unix.Openat(s.procFD, p.name+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		s.done(p, err)
		return
	}
	defer unix.Close(dfd)
	// The offset of /proc/PID/fd is the descriptor number plus two (for
	// "." and ".."): seek straight past the descriptors already read.
	if p.next > 0 {
		if _, err := unix.Seek(dfd, int64(p.next)+2, io.SeekStart); err != nil {
			s.done(p, err)
			return
		}
	}
	for {
		n, err := unix.Getdents(dfd, s.dents)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			s.done(p, err)
			return
		}
		stop := false
		perr := walkDirents(s.dents[:n], func(name []byte) bool {
			fd, ok := parseFD(name)
			if !ok {
				return true // "." and ".."
			}
			if fd >= end {
				p.next, stop = fd, true
				return false
			}
			s.fdsRead++
			k, err := unix.Readlinkat(dfd, string(name), s.link)
			if err != nil {
				if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
					s.done(p, err)
					stop = true
					return false
				}
				return true // closed meanwhile
			}
			if ino, ok := parseSocketLink(s.link[:k]); ok {
				if port := s.unmatched[ino]; port != nil {
					port.Pid = uint32(p.pid)
					delete(s.unmatched, ino)
					ns, _ := parseNSLink([]byte(port.Netns), "net")
					s.wanted[nsUID{ns, port.Uid}]--
					if len(s.unmatched) == 0 {
						stop = true
						return false
					}
				}
			}
			return true
		})
		if perr != nil {
			s.done(p, perr)
			return
		}
		if stop {
			return
		}
	}
}

// done marks p as fully read, counting a process the agent may not inspect.
func (s *ownerSearch) done(p *procEntry, err error) {
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		s.denied++
		if len(s.deniedPids) < 5 {
			s.deniedPids = append(s.deniedPids, p.pid)
		}
	}
	p.next = -1
}

// unknownReason says why the sockets still unmatched after a full search
// have no owner.
func (s *ownerSearch) unknownReason() string {
	if s.denied == 0 {
		return "no process holds it: a kernel socket, or its holder exited during the scan"
	}
	pids := make([]string, len(s.deniedPids))
	for i, p := range s.deniedPids {
		pids[i] = strconv.Itoa(p)
	}
	more := ""
	if s.denied > len(s.deniedPids) {
		more = ", ..."
	}
	return fmt.Sprintf("no readable process holds it: a kernel socket, or a process whose descriptors the agent may not read (%d such: pid %s%s)",
		s.denied, strings.Join(pids, ", "), more)
}

// walkDirents calls fn with the name of each struct linux_dirent64 in b,
// as getdents64(2) fills it, until fn returns false.
func walkDirents(b []byte, fn func(name []byte) bool) error {
	const nameOff = 19 // d_ino 8, d_off 8, d_reclen 2, d_type 1
	for len(b) > 0 {
		if len(b) < nameOff+1 {
			return fmt.Errorf("getdents: %d trailing bytes", len(b))
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:]))
		if reclen <= nameOff || reclen > len(b) {
			return fmt.Errorf("getdents: bad record length %d", reclen)
		}
		name := b[nameOff:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if !fn(name) {
			return nil
		}
		b = b[reclen:]
	}
	return nil
}

// parseFD parses a /proc/PID/fd entry name.
func parseFD(name []byte) (int, bool) {
	if len(name) == 0 || len(name) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range name {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n < 1<<31
}

// parseSocketLink parses the target of a /proc/PID/fd link to a socket,
// "socket:[INODE]".
func parseSocketLink(b []byte) (uint64, bool) {
	return parseNSLink(b, "socket")
}

// parseNSLink parses "KIND:[INODE]", the form of /proc/PID/ns/* and
// socket links.
func parseNSLink(b []byte, kind string) (uint64, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(kind))
	if !ok {
		return 0, false
	}
	rest, ok = bytes.CutPrefix(rest, []byte(":["))
	if !ok {
		return 0, false
	}
	rest, ok = bytes.CutSuffix(rest, []byte("]"))
	if !ok || len(rest) == 0 || rest[0] < '1' || rest[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest), 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// readProcFile reads a small /proc file relative to the /proc directory.
func readProcFile(procFD int, name string, max int64) ([]byte, error) {
	fd, err := unix.Openat(procFD, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}
