package tracer

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// procKey names one process for the life of a boot: its pid and its start
// time in clock ticks since boot (as /proc/PID/stat has it).
type procKey struct {
	pid   uint32
	start uint64
}

type entry struct {
	// proc is never modified once cached: events share it. It is nil for a
	// process that forked and has not exec'd (yet): most exec right away,
	// so it is made only when asked for, from forkOf.
	proc      *nodewardv1.Process
	selfStart uint64
	parent    procKey
	// brief is the short form used in other processes' ancestry and in
	// exit events.
	brief  *nodewardv1.Process
	forkOf *entry
}

// setProc makes p the entry's process, with its short form.
func (e *entry) setProc(p *nodewardv1.Process) {
	e.proc = p
	e.brief = &nodewardv1.Process{
		ExecId: p.ExecId, ParentExecId: p.ParentExecId, Pid: p.Pid, Ppid: p.Ppid, Uid: p.Uid,
		Comm: p.Comm, Filename: p.Filename, ContainerId: p.ContainerId, Pod: p.Pod, FromProcfs: p.FromProcfs,
	}
}

// Cache maps live processes to what the tracer knows of them, so that events
// carry their parent and ancestors. It is filled from /proc at start-up and
// kept by exec, fork and exit events.
type Cache struct {
	prefix string
	clock  bootClock

	mu    sync.Mutex
	byPID map[uint32]*entry
}

// NewCache returns an empty cache whose exec ids start with the node name
// and boot id.
func NewCache(nodeName, bootID string, clock bootClock) *Cache {
	return &Cache{prefix: ExecIDPrefix(nodeName, bootID), clock: clock, byPID: map[uint32]*entry{}}
}

// ExecIDPrefix is the node and boot part every exec id on this boot starts
// with; others that name processes (SSH sessions) use it too.
func ExecIDPrefix(nodeName, bootID string) string {
	if len(bootID) > 8 {
		bootID = bootID[:8]
	}
	return nodeName + ":" + bootID + ":"
}

// ExecIDWith is the exec id of pid started at startTicks, after prefix.
func ExecIDWith(prefix string, pid uint32, startTicks uint64) string {
	return prefix + strconv.FormatUint(startTicks, 10) + ":" + strconv.FormatUint(uint64(pid), 10)
}

// ExecID is the stable id of a process: node, boot, start time and pid, so
// a reused pid gets a new id.
func (c *Cache) ExecID(pid uint32, startTicks uint64) string {
	var num [24]byte
	var sb strings.Builder // one allocation: the id itself
	sb.Grow(len(c.prefix) + len(num))
	sb.WriteString(c.prefix)
	sb.Write(strconv.AppendUint(num[:0], startTicks, 10))
	sb.WriteByte(':')
	sb.Write(strconv.AppendUint(num[:0], uint64(pid), 10))
	return sb.String()
}

// Len is the number of processes cached.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byPID)
}

// putLocked stores p under key, replacing whatever had that pid.
func (c *Cache) putLocked(key, parent procKey, p *nodewardv1.Process) *entry {
	e := &entry{parent: parent, selfStart: key.start}
	e.setProc(p)
	c.byPID[key.pid] = e
	return e
}

// lookupLocked returns the live entry for key, or nil.
func (c *Cache) lookupLocked(key procKey) *entry {
	e := c.byPID[key.pid]
	if e == nil || e.selfStart != key.start {
		return nil
	}
	if e.proc == nil {
		c.materializeLocked(key, e)
	}
	return e
}

// materializeLocked makes the Process of a forked child: its parent's
// binary, arguments and credentials under its own ids.
func (c *Cache) materializeLocked(key procKey, e *entry) {
	p := &nodewardv1.Process{
		ExecId:       c.ExecID(key.pid, key.start),
		ParentExecId: c.ExecID(e.parent.pid, e.parent.start),
		Pid:          key.pid,
		Tid:          key.pid,
		Ppid:         e.parent.pid,
		StartTime:    timestamppb.New(c.clock.ticks(key.start)),
	}
	if pe := e.forkOf; pe != nil {
		if pe.proc == nil {
			c.materializeLocked(e.parent, pe)
		}
		pp := pe.proc
		p.Uid, p.Gid, p.Euid, p.Auid, p.AuditSessionId = pp.Uid, pp.Gid, pp.Euid, pp.Auid, pp.AuditSessionId
		p.Comm, p.Filename, p.Args, p.ArgsTruncated, p.Cwd = pp.Comm, pp.Filename, pp.Args, pp.ArgsTruncated, pp.Cwd
		p.CgroupId, p.CgroupPath, p.ContainerId, p.Pod = pp.CgroupId, pp.CgroupPath, pp.ContainerId, pp.Pod
	}
	e.setProc(p)
	e.forkOf = nil
}

// Exec records p (which has its exec id set) and returns its parent and up
// to depth further ancestors, nearest first. It sets p's parent exec id.
func (c *Cache) Exec(key, parent procKey, p *nodewardv1.Process, depth int) (*nodewardv1.Process, []*nodewardv1.Process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	par, anc := c.ancestryLocked(parent, depth)
	if par != nil {
		p.ParentExecId = par.ExecId
	} else {
		p.ParentExecId = c.ExecID(parent.pid, parent.start)
	}
	c.putLocked(key, parent, p)
	return par, anc
}

func (c *Cache) ancestryLocked(parent procKey, depth int) (*nodewardv1.Process, []*nodewardv1.Process) {
	pe := c.lookupLocked(parent)
	if pe == nil {
		return nil, nil
	}
	var anc []*nodewardv1.Process
	k := pe.parent
	for i := 0; i < depth; i++ {
		e := c.lookupLocked(k)
		if e == nil || k.pid == 0 {
			break
		}
		anc = append(anc, e.brief)
		if e.parent == k {
			break
		}
		k = e.parent
	}
	return pe.proc, anc
}

// Fork records a child that has not exec'd yet: it runs its parent's
// binary.
func (c *Cache) Fork(child, parent procKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pe *entry
	if e := c.byPID[parent.pid]; e != nil && e.selfStart == parent.start {
		pe = e
	}
	c.byPID[child.pid] = &entry{selfStart: child.start, parent: parent, forkOf: pe}
}

// Exit removes the process and returns its short form (ids, pid, uid,
// comm, filename, container), or nil if it was not known: an exit event
// names the process, its exec event described it.
func (c *Cache) Exit(key procKey) *nodewardv1.Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupLocked(key)
	if e == nil {
		return nil
	}
	delete(c.byPID, key.pid)
	return e.brief
}

// Sweep forgets processes that are gone from proc without an exit event
// having been seen (it may have been lost).
func (c *Cache) Sweep(proc string) {
	c.mu.Lock()
	pids := make([]uint32, 0, len(c.byPID))
	for pid := range c.byPID {
		pids = append(pids, pid)
	}
	c.mu.Unlock()
	for _, pid := range pids {
		if _, err := os.Stat(procPath(proc, strconv.FormatUint(uint64(pid), 10))); os.IsNotExist(err) {
			c.mu.Lock()
			delete(c.byPID, pid)
			c.mu.Unlock()
		}
	}
}

// bootClock turns kernel boot-time clocks into wall-clock time.
type bootClock struct {
	boot time.Time
}

func newBootClock() bootClock {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return bootClock{boot: now}
	}
	return bootClock{boot: now.Add(-time.Duration(ts.Nano()))}
}

// ns converts nanoseconds since boot (bpf_ktime_get_boot_ns).
func (b bootClock) ns(n uint64) time.Time { return b.boot.Add(time.Duration(n)) }

// ticks converts clock ticks since boot (USER_HZ = 100 on every Linux ABI
// nodeward runs on).
func (b bootClock) ticks(t uint64) time.Time {
	return b.boot.Add(time.Duration(t) * 10 * time.Millisecond)
}
