package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/nodeward/nodeward/agent/cgroups"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	flagArgsTruncated     = 1
	flagCwdTruncated      = 2
	flagFilenameTruncated = 4
)

// execHeaderLen is the fixed part of an exec record; the strings follow.
var execHeaderLen = int(unsafe.Offsetof(bpfExecEvent{}.Buf))

var errShort = errors.New("record too short")

// rawExec is an exec record split into its fixed part and its strings.
type rawExec struct {
	hdr      bpfExecEvent // Buf unused: the strings stay in the record
	filename string
	cwd      string
	args     []string
}

// decodeExec parses an exec record as the BPF program wrote it.
// File names come through in, which may be nil.
func decodeExec(rec []byte, out *rawExec, in interner) error {
	if len(rec) < execHeaderLen {
		return fmt.Errorf("exec: %w (%d bytes)", errShort, len(rec))
	}
	// Copy the header into the generated struct: the record may not be
	// aligned, and the struct's string area is not part of it.
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out.hdr)), execHeaderLen), rec)
	h := &out.hdr
	tail := rec[execHeaderLen:]
	fl, cl, al := int(h.FilenameLen), int(h.CwdLen), int(h.ArgsLen)
	if fl+cl+al > len(tail) {
		return fmt.Errorf("exec: %w: strings of %d+%d+%d bytes in %d", errShort, fl, cl, al, len(tail))
	}
	out.filename = in.get(tail[:fl])
	out.cwd = validUTF8(cwdFromComponents(tail[fl:fl+cl], h.Flags&flagCwdTruncated != 0))
	out.args = splitArgs(tail[fl+cl : fl+cl+al])
	for i, a := range out.args {
		out.args[i] = validUTF8(a)
	}
	return nil
}

// validUTF8 replaces bytes that are not UTF-8: proto strings must be valid,
// and one odd file name must not make a whole batch unsendable.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// cwdFromComponents joins names written leaf first into an absolute path.
// A path cut short by the BPF walk's depth limit starts with "…/".
func cwdFromComponents(b []byte, truncated bool) string {
	if len(b) == 0 && !truncated {
		return "/"
	}
	// The start of each name; the names are NUL-ended, the last maybe not.
	var first [32]int
	starts := first[:0]
	size := 0
	for i := 0; i < len(b); {
		starts = append(starts, i)
		n := bytes.IndexByte(b[i:], 0)
		if n < 0 {
			n = len(b) - i
		}
		size += 1 + n
		i += n + 1
	}
	var sb strings.Builder
	if truncated {
		size += len("…")
	}
	sb.Grow(size)
	if truncated {
		sb.WriteString("…")
	}
	for i := len(starts) - 1; i >= 0; i-- {
		name := b[starts[i]:]
		if n := bytes.IndexByte(name, 0); n >= 0 {
			name = name[:n]
		}
		sb.WriteByte('/')
		sb.Write(name)
	}
	return sb.String()
}

// splitArgs splits argv as the kernel stores it: each argument NUL-ended.
// A cut-off last argument has no NUL and is kept as it is.
func splitArgs(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	s := string(b) // one allocation for all arguments
	n := strings.Count(s, "\x00") + 1
	out := make([]string, 0, n)
	for {
		i := strings.IndexByte(s, 0)
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
}

// decodeFixed copies a fixed-size record into the generated struct v.
func decodeFixed[T any](rec []byte, v *T) error {
	n := int(unsafe.Sizeof(*v))
	if len(rec) < n {
		return fmt.Errorf("%w (%d of %d bytes)", errShort, len(rec), n)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(v)), n), rec)
	return nil
}

// handler turns records into events. It runs on one goroutine.
type handler struct {
	t       *Tracer
	emit    func(*nodewardv1.Event)
	ex      rawExec
	strings interner
}

func (h *handler) handle(rec []byte) {
	t := h.t
	switch rec[0] {
	case eventExec:
		if err := decodeExec(rec, &h.ex, h.strings); err != nil {
			t.cfg.Log.Warn("bad exec record", "err", err)
			return
		}
		ev := h.execEvent(&h.ex)
		t.delivered[eventExec].Add(1)
		h.emit(ev)
	case eventExit:
		var x bpfExitEvent
		if err := decodeFixed(rec, &x); err != nil {
			t.cfg.Log.Warn("bad exit record", "err", err)
			return
		}
		key := procKey{x.Pid, x.StartTicks}
		p := t.cache.Exit(key)
		if p == nil {
			p = &nodewardv1.Process{ExecId: t.cache.ExecID(x.Pid, x.StartTicks), Pid: x.Pid, Tid: x.Tid,
				StartTime: timestamppb.New(t.clock.ticks(x.StartTicks))}
		}
		t.delivered[eventExit].Add(1)
		h.emit(exitEvent(t.cfg.NodeName, t.clock.ns(x.Ktime), p, x.ExitCode, time.Duration(x.DurationNs)))
	case eventFork:
		var f bpfForkEvent
		if err := decodeFixed(rec, &f); err != nil {
			t.cfg.Log.Warn("bad fork record", "err", err)
			return
		}
		t.cache.Fork(procKey{f.Pid, f.StartTicks}, procKey{f.Ppid, f.ParentStartTicks})
		t.delivered[eventFork].Add(1)
	default:
		t.cfg.Log.Warn("unknown record type", "type", rec[0], "len", len(rec))
	}
}

func (h *handler) execEvent(x *rawExec) *nodewardv1.Event {
	t := h.t
	hd := &x.hdr
	key := procKey{hd.Pid, hd.StartTicks}
	parent := procKey{hd.Ppid, hd.ParentStartTicks}
	m := new(execMessage)
	p := &m.process
	*p = nodewardv1.Process{
		ExecId:         t.cache.ExecID(hd.Pid, hd.StartTicks),
		Pid:            hd.Pid,
		Tid:            hd.Tid,
		Ppid:           hd.Ppid,
		Uid:            hd.Uid,
		Gid:            hd.Gid,
		Euid:           hd.Euid,
		Auid:           hd.Auid,
		AuditSessionId: hd.Sessionid,
		Comm:           h.strings.get(hd.Comm[:]),
		Filename:       x.filename,
		Args:           t.cfg.Redact.Args(x.args),
		ArgsTruncated:  hd.Flags&flagArgsTruncated != 0,
		Cwd:            x.cwd,
		CgroupId:       hd.CgroupId,
		StartTime:      setTime(&m.start, t.clock.ticks(hd.StartTicks)),
	}
	t.attribute(p, hd.CgroupId, hd.MemCgroupId)
	par, anc := t.cache.Exec(key, parent, p, t.cfg.AncestorDepth)
	m.exec = nodewardv1.ExecEvent{Process: p, Parent: par, Ancestors: anc}
	m.body.Exec = &m.exec
	m.event = nodewardv1.Event{NodeName: t.cfg.NodeName, Time: setTime(&m.time, t.clock.ns(hd.Ktime)), Body: &m.body}
	return &m.event
}

// execMessage holds an exec event and its messages in one allocation: an
// exec storm makes tens of thousands a second.
type execMessage struct {
	event       nodewardv1.Event
	body        nodewardv1.Event_Exec
	exec        nodewardv1.ExecEvent
	process     nodewardv1.Process
	time, start timestamppb.Timestamp
}

// exitMessage is execMessage for exits.
type exitMessage struct {
	event    nodewardv1.Event
	body     nodewardv1.Event_Exit
	exit     nodewardv1.ExitEvent
	time     timestamppb.Timestamp
	duration durationpb.Duration
}

// exitEvent is the exit of p with the kernel's exit code (status << 8 | signal).
func exitEvent(node string, at time.Time, p *nodewardv1.Process, code uint32, d time.Duration) *nodewardv1.Event {
	m := new(exitMessage)
	m.duration.Seconds, m.duration.Nanos = int64(d/time.Second), int32(d%time.Second)
	m.exit = nodewardv1.ExitEvent{Process: p, ExitCode: int32(code >> 8 & 0xff), Signal: int32(code & 0x7f), Duration: &m.duration}
	m.body.Exit = &m.exit
	m.event = nodewardv1.Event{NodeName: node, Time: setTime(&m.time, at), Body: &m.body}
	return &m.event
}

// setTime sets ts to t and returns it.
func setTime(ts *timestamppb.Timestamp, t time.Time) *timestamppb.Timestamp {
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
	return ts
}

// interner hands out one string for equal bytes: a node runs the same few
// hundred commands over and over, and each exec would otherwise allocate
// its command and file name afresh.
type interner map[string]string

// get returns b up to its first NUL as a valid UTF-8 string, the same
// string as for earlier equal bytes. A nil interner allocates each time.
func (in interner) get(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if in == nil {
		return validUTF8(string(b))
	}
	if s, ok := in[string(b)]; ok {
		return s
	}
	if len(in) >= maxInterned {
		clear(in)
	}
	s := validUTF8(string(b))
	in[string(b)] = s
	return s
}

// maxInterned bounds the interned strings (each at most a path's length).
const maxInterned = 4096

// attribute sets the cgroup path, container and pod of p from its cgroup
// ids: the cgroup2 path when it names a container, else the v1 memory
// controller's (hybrid and v1-only nodes).
func (t *Tracer) attribute(p *nodewardv1.Process, v2, mem uint64) {
	var first cgroups.Info
	for _, c := range []struct {
		h  hierarchy
		id uint64
	}{{hierV2, v2}, {hierMemory, mem}} {
		info := t.cgroups.info(c.h, c.id)
		if info.Path == "" {
			continue
		}
		if info.ContainerID != "" {
			first = info
			break
		}
		if first.Path == "" || (first.PodUID == "" && info.PodUID != "") {
			first = info
		}
	}
	p.CgroupPath, p.ContainerId = first.Path, first.ContainerID
	if first.PodUID != "" {
		p.Pod = &nodewardv1.Pod{Uid: first.PodUID}
	}
	namePod(p, t.cfg.Pods)
}

// namePod adds the pod's name and namespace and the container's name from
// the runtime, when it knows the container.
func namePod(p *nodewardv1.Process, pods PodNamer) {
	if pods == nil || p.ContainerId == "" {
		return
	}
	named, ok := pods.Lookup(p.ContainerId)
	if !ok {
		return
	}
	if p.Pod == nil {
		p.Pod = &nodewardv1.Pod{Uid: named.Uid}
	}
	p.Pod.Name, p.Pod.Namespace, p.Pod.ContainerName = named.Name, named.Namespace, named.ContainerName
}

// reportLoss emits a loss event when the counters moved since last.
func (h *handler) reportLoss(last *Counts) {
	c, err := h.t.Counts()
	if err != nil {
		h.t.cfg.Log.Warn("loss counters", "err", err)
		return
	}
	ev := &nodewardv1.LossEvent{RingBufferByKind: map[string]uint64{}, QueueByKind: map[string]uint64{}}
	for _, k := range kinds[1:] {
		if d := c.RingBufferLost[k] - last.RingBufferLost[k]; d > 0 {
			ev.RingBuffer += d
			ev.RingBufferByKind[k] = d
		}
		if d := c.QueueLost[k] - last.QueueLost[k]; d > 0 {
			ev.Queue += d
			ev.QueueByKind[k] = d
		}
	}
	*last = c
	if ev.RingBuffer == 0 && ev.Queue == 0 {
		return
	}
	h.t.cfg.Log.Warn("events lost", "ring_buffer", ev.RingBuffer, "queue", ev.Queue)
	h.emit(&nodewardv1.Event{
		NodeName: h.t.cfg.NodeName,
		Time:     timestamppb.Now(),
		Body:     &nodewardv1.Event_Loss{Loss: ev},
	})
}
