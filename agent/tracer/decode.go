package tracer

import (
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
func decodeExec(rec []byte, out *rawExec) error {
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
	out.filename = validUTF8(trimNUL(tail[:fl]))
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
	var parts []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		parts = append(parts, string(b[:i]))
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	var sb strings.Builder
	if truncated {
		sb.WriteString("…")
	}
	for i := len(parts) - 1; i >= 0; i-- {
		sb.WriteByte('/')
		sb.WriteString(parts[i])
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
	t    *Tracer
	emit func(*nodewardv1.Event)
	ex   rawExec
}

func (h *handler) handle(rec []byte) {
	t := h.t
	switch rec[0] {
	case eventExec:
		if err := decodeExec(rec, &h.ex); err != nil {
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
		code := x.ExitCode
		t.delivered[eventExit].Add(1)
		h.emit(&nodewardv1.Event{
			NodeName: t.cfg.NodeName,
			Time:     timestamppb.New(t.clock.ns(x.Ktime)),
			Body: &nodewardv1.Event_Exit{Exit: &nodewardv1.ExitEvent{
				Process:  p,
				ExitCode: int32(code >> 8 & 0xff),
				Signal:   int32(code & 0x7f),
				Duration: durationpb.New(time.Duration(x.DurationNs)),
			}},
		})
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
	p := &nodewardv1.Process{
		ExecId:         t.cache.ExecID(hd.Pid, hd.StartTicks),
		ParentExecId:   t.cache.ExecID(hd.Ppid, hd.ParentStartTicks),
		Pid:            hd.Pid,
		Tid:            hd.Tid,
		Ppid:           hd.Ppid,
		Uid:            hd.Uid,
		Gid:            hd.Gid,
		Euid:           hd.Euid,
		Auid:           hd.Auid,
		AuditSessionId: hd.Sessionid,
		Comm:           validUTF8(trimNUL(hd.Comm[:])),
		Filename:       x.filename,
		Args:           t.cfg.Redact.Args(x.args),
		ArgsTruncated:  hd.Flags&flagArgsTruncated != 0,
		Cwd:            x.cwd,
		CgroupId:       hd.CgroupId,
		StartTime:      timestamppb.New(t.clock.ticks(hd.StartTicks)),
	}
	t.attribute(p, hd.CgroupId, hd.MemCgroupId)
	par, anc := t.cache.Exec(key, parent, p, t.cfg.AncestorDepth)
	return &nodewardv1.Event{
		NodeName: t.cfg.NodeName,
		Time:     timestamppb.New(t.clock.ns(hd.Ktime)),
		Body:     &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: p, Parent: par, Ancestors: anc}},
	}
}

// attribute sets the cgroup path, container and pod of p from its cgroup
// ids: the cgroup2 path when it names a container, else the v1 memory
// controller's (hybrid and v1-only nodes).
func (t *Tracer) attribute(p *nodewardv1.Process, v2, mem uint64) {
	var first cgroups.Info
	for _, c := range []struct {
		h  hierarchy
		id uint64
	}{{hierV2, v2}, {hierMemory, mem}} {
		path := t.cgroups.path(c.h, c.id)
		if path == "" {
			continue
		}
		info := cgroups.FromPath(path)
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
