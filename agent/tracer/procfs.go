package tracer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/nodeward/nodeward/agent/cgroups"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// procStat is what the tracer needs from /proc/PID/stat.
type procStat struct {
	comm       string
	ppid       uint32
	startTicks uint64
}

// parseStat parses /proc/PID/stat (proc(5)). The comm field is in
// parentheses and may itself hold spaces and parentheses.
func parseStat(r io.Reader) (procStat, error) {
	var s procStat
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return s, fmt.Errorf("read stat: %w", err)
	}
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return s, errors.New("stat: no (comm)")
	}
	s.comm = validUTF8(string(b[open+1 : end]))
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state): ppid is field 4, starttime field 22.
	if len(f) < 20 {
		return s, fmt.Errorf("stat: %d fields after comm, want at least 20", len(f))
	}
	ppid, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return s, fmt.Errorf("stat: ppid: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return s, fmt.Errorf("stat: starttime: %w", err)
	}
	s.ppid, s.startTicks = uint32(ppid), start
	return s, nil
}

// procStatus is the credentials in /proc/PID/status.
type procStatus struct {
	uid, euid, gid uint32
}

// parseStatus reads the Uid and Gid lines of /proc/PID/status: real,
// effective, saved, filesystem.
func parseStatus(r io.Reader) (procStatus, error) {
	var s procStatus
	seen := 0
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "Uid" && k != "Gid") {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 2 {
			return s, fmt.Errorf("status: %s: %q", k, v)
		}
		real, err1 := strconv.ParseUint(f[0], 10, 32)
		eff, err2 := strconv.ParseUint(f[1], 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return s, fmt.Errorf("status: %s: %w", k, err)
		}
		if k == "Uid" {
			s.uid, s.euid = uint32(real), uint32(eff)
		} else {
			s.gid = uint32(real)
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("read status: %w", err)
	}
	if seen < 2 {
		return s, errors.New("status: no Uid/Gid lines")
	}
	return s, nil
}

const maxArgsBytes = 4096

// FillFromProc adds every process running now, read from proc, so that
// processes started before the tracer have ids, parents and ancestry.
// Events seen since the tracer attached win over what /proc says.
func (c *Cache) FillFromProc(proc string, red *Redactor) error {
	d, err := os.Open(proc)
	if err != nil {
		return fmt.Errorf("open %s: %w", proc, err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list %s: %w", proc, err)
	}
	type found struct {
		key, parent procKey
		p           *nodewardv1.Process
	}
	var all []found
	starts := map[uint32]uint64{}
	for _, n := range names {
		pid, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			continue
		}
		p, st, err := readProc(proc, n, red)
		if err != nil {
			continue // gone meanwhile, or a kernel thread's unreadable parts
		}
		p.Pid, p.Tid = uint32(pid), uint32(pid)
		starts[p.Pid] = st.startTicks
		all = append(all, found{key: procKey{p.Pid, st.startTicks}, parent: procKey{pid: st.ppid}, p: p})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range all {
		f.parent.start = starts[f.parent.pid]
		f.p.ExecId = c.ExecID(f.key.pid, f.key.start)
		if f.parent.pid != 0 {
			f.p.ParentExecId = c.ExecID(f.parent.pid, f.parent.start)
		}
		f.p.StartTime = timestamppb.New(c.clock.ticks(f.key.start))
		if cur := c.byPID[f.key.pid]; cur != nil && cur.selfStart == f.key.start {
			continue // an event already told us more
		}
		c.putLocked(f.key, f.parent, f.p)
	}
	return nil
}

// readProc reads one process's files under proc.
func readProc(proc, pid string, red *Redactor) (*nodewardv1.Process, procStat, error) {
	var st procStat
	f, err := os.Open(procPath(proc, pid, "stat"))
	if err != nil {
		return nil, st, err
	}
	st, err = parseStat(f)
	f.Close()
	if err != nil {
		return nil, st, err
	}
	p := &nodewardv1.Process{Comm: st.comm, Ppid: st.ppid, FromProcfs: true, Auid: ^uint32(0), AuditSessionId: ^uint32(0)}
	if f, err := os.Open(procPath(proc, pid, "status")); err == nil {
		if s, err := parseStatus(f); err == nil {
			p.Uid, p.Euid, p.Gid = s.uid, s.euid, s.gid
		}
		f.Close()
	}
	if b, err := readLimited(procPath(proc, pid, "cmdline"), maxArgsBytes+1); err == nil {
		if len(b) > maxArgsBytes {
			b, p.ArgsTruncated = b[:maxArgsBytes], true
		}
		args := splitArgs(b)
		for i, a := range args {
			args[i] = validUTF8(a)
		}
		p.Args = red.Args(args)
	}
	exe, _ := os.Readlink(procPath(proc, pid, "exe"))
	cwd, _ := os.Readlink(procPath(proc, pid, "cwd"))
	p.Filename, p.Cwd = validUTF8(exe), validUTF8(cwd)
	if b, err := readLimited(procPath(proc, pid, "loginuid"), 32); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			p.Auid = uint32(v)
		}
	}
	if b, err := readLimited(procPath(proc, pid, "sessionid"), 32); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			p.AuditSessionId = uint32(v)
		}
	}
	if f, err := os.Open(procPath(proc, pid, "cgroup")); err == nil {
		info, err := cgroups.Parse(f)
		f.Close()
		if err == nil {
			p.CgroupPath, p.ContainerId = info.Path, info.ContainerID
			if info.PodUID != "" {
				p.Pod = &nodewardv1.Pod{Uid: info.PodUID}
			}
		}
	}
	return p, st, nil
}

func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}
