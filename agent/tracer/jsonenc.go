package tracer

import (
	"math/bits"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// JSONEncoder writes the tracer's events as JSON that protojson reads back
// as the same message (proto field names, zero values left out, 64-bit
// integers quoted, RFC 3339 times).
//
// protojson walks messages by reflection and costs about 50 µs for an exec
// event with its parent and ancestors; during an exec storm that is more
// CPU than the traced workload gets. This encoder writes the event kinds
// the tracer makes directly and hands anything else to protojson. It also
// keeps the encoding of the last few parents and ancestors it wrote: the
// process cache hands every exec the same read-only Process for a shared
// parent, and in a storm (a build, a shell loop) most execs share theirs,
// so their ancestry is written once and then copied.
type JSONEncoder struct {
	memo [16]memoProc
	next int
}

type memoProc struct {
	p    *nodewardv1.Process
	json []byte
}

// Append appends ev as one line of JSON and returns the extended buffer.
func (m *JSONEncoder) Append(b []byte, ev *nodewardv1.Event) ([]byte, error) {
	return appendJSON(b, ev, m)
}

// procBody writes p, from the memo when it holds p.
func (m *JSONEncoder) procBody(e *jsonEnc, p *nodewardv1.Process) {
	for i := range m.memo {
		if m.memo[i].p == p {
			e.b = append(e.b, m.memo[i].json...)
			return
		}
	}
	start := len(e.b)
	e.procBody(p)
	if e.err != nil {
		return
	}
	slot := &m.memo[m.next]
	slot.p, slot.json = p, append(slot.json[:0], e.b[start:]...)
	m.next = (m.next + 1) % len(m.memo)
}

// appendJSON appends ev, through memo's remembered processes when memo is
// not nil.
func appendJSON(b []byte, ev *nodewardv1.Event, memo *JSONEncoder) ([]byte, error) {
	switch ev.GetBody().(type) {
	case *nodewardv1.Event_Exec, *nodewardv1.Event_Exit, *nodewardv1.Event_Loss:
	default:
		return protojson.MarshalOptions{UseProtoNames: true}.MarshalAppend(b, ev)
	}
	e := jsonEnc{b: append(b, '{')}
	e.str("node_name", ev.GetNodeName())
	e.u64("sequence", ev.GetSequence())
	e.u32("index", ev.GetIndex())
	e.ts("time", ev.GetTime())
	switch x := ev.GetBody().(type) {
	case *nodewardv1.Event_Exec:
		e.key("exec")
		e.b = append(e.b, '{')
		e.proc("process", x.Exec.GetProcess())
		if par := x.Exec.GetParent(); par != nil {
			e.key("parent")
			e.sharedProcBody(par, memo)
		}
		if anc := x.Exec.GetAncestors(); len(anc) > 0 {
			e.key("ancestors")
			e.b = append(e.b, '[')
			for i, p := range anc {
				if i > 0 {
					e.b = append(e.b, ',')
				}
				e.sharedProcBody(p, memo)
			}
			e.b = append(e.b, ']')
		}
		e.b = append(e.b, '}')
	case *nodewardv1.Event_Exit:
		e.key("exit")
		e.b = append(e.b, '{')
		e.proc("process", x.Exit.GetProcess())
		e.i32("exit_code", x.Exit.GetExitCode())
		e.i32("signal", x.Exit.GetSignal())
		e.dur("duration", x.Exit.GetDuration())
		e.b = append(e.b, '}')
	case *nodewardv1.Event_Loss:
		l := x.Loss
		e.key("loss")
		e.b = append(e.b, '{')
		e.u64("ring_buffer", l.GetRingBuffer())
		e.u64("queue", l.GetQueue())
		e.u64("spool", l.GetSpool())
		e.counts("ring_buffer_by_kind", l.GetRingBufferByKind())
		e.counts("queue_by_kind", l.GetQueueByKind())
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, '}')
	return e.b, e.err
}

type jsonEnc struct {
	b   []byte
	err error
}

func (e *jsonEnc) key(k string) {
	b := e.b
	if b[len(b)-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, k...)
	e.b = append(b, '"', ':')
}

func (e *jsonEnc) str(k, v string) {
	if v == "" {
		return
	}
	e.key(k)
	e.quote(v)
}

func (e *jsonEnc) u32(k string, v uint32) {
	if v == 0 {
		return
	}
	e.key(k)
	e.b = strconv.AppendUint(e.b, uint64(v), 10)
}

func (e *jsonEnc) i32(k string, v int32) {
	if v == 0 {
		return
	}
	e.key(k)
	e.b = strconv.AppendInt(e.b, int64(v), 10)
}

func (e *jsonEnc) u64(k string, v uint64) {
	if v == 0 {
		return
	}
	e.key(k)
	e.b = append(e.b, '"')
	e.b = strconv.AppendUint(e.b, v, 10)
	e.b = append(e.b, '"')
}

func (e *jsonEnc) boolean(k string, v bool) {
	if v {
		e.key(k)
		e.b = append(e.b, "true"...)
	}
}

func (e *jsonEnc) counts(k string, m map[string]uint64) {
	if len(m) == 0 {
		return
	}
	e.key(k)
	e.b = append(e.b, '{')
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.quote(k)
		e.b = append(e.b, ':', '"')
		e.b = strconv.AppendUint(e.b, m[k], 10)
		e.b = append(e.b, '"')
	}
	e.b = append(e.b, '}')
}

// ts writes a Timestamp as protojson does: UTC, 0, 3, 6 or 9 fractional digits.
func (e *jsonEnc) ts(k string, t *timestamppb.Timestamp) {
	if t == nil {
		return
	}
	e.key(k)
	e.b = append(e.b, '"')
	e.b = appendSeconds(e.b, t.GetSeconds())
	e.b = appendNanos(e.b, t.GetNanos())
	e.b = append(e.b, 'Z', '"')
}

// appendSeconds writes sec (Unix seconds, UTC) as 2006-01-02T15:04:05,
// by arithmetic: time.Format is the dearest part of an event otherwise.
func appendSeconds(b []byte, sec int64) []byte {
	if sec < 0 || sec > 253402300799 { // outside years 1970-9999: rare, let time do it
		return time.Unix(sec, 0).UTC().AppendFormat(b, "2006-01-02T15:04:05")
	}
	days, rem := sec/86400, sec%86400
	// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
	z := days + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if m > 12 {
		m -= 12
	}
	if m <= 2 {
		y++
	}
	b = append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	b = append(b, byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10), 'T')
	h, mi, se := rem/3600, rem/60%60, rem%60
	return append(b, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+se/10), byte('0'+se%10))
}

// dur writes a Duration as protojson does: seconds, 0/3/6/9 digits, "s".
func (e *jsonEnc) dur(k string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	e.key(k)
	e.b = append(e.b, '"')
	s, n := d.GetSeconds(), d.GetNanos()
	if s < 0 || n < 0 {
		e.b = append(e.b, '-')
		s, n = -s, -n
	}
	e.b = strconv.AppendInt(e.b, s, 10)
	e.b = appendNanos(e.b, n)
	e.b = append(e.b, 's', '"')
}

func appendNanos(b []byte, n int32) []byte {
	if n == 0 {
		return b
	}
	var d [9]byte
	v := uint32(n)
	for i := 8; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	digits := d[:]
	switch {
	case n%1000000 == 0:
		digits = d[:3]
	case n%1000 == 0:
		digits = d[:6]
	}
	b = append(b, '.')
	return append(b, digits...)
}

func (e *jsonEnc) proc(k string, p *nodewardv1.Process) {
	if p == nil {
		return
	}
	e.key(k)
	e.procBody(p)
}

// sharedProcBody writes a parent or ancestor, through memo when there is one.
func (e *jsonEnc) sharedProcBody(p *nodewardv1.Process, memo *JSONEncoder) {
	if memo == nil {
		e.procBody(p)
		return
	}
	memo.procBody(e, p)
}

func (e *jsonEnc) procBody(p *nodewardv1.Process) {
	e.b = append(e.b, '{')
	e.str("exec_id", p.GetExecId())
	e.str("parent_exec_id", p.GetParentExecId())
	e.u32("pid", p.GetPid())
	e.u32("tid", p.GetTid())
	e.u32("ppid", p.GetPpid())
	e.u32("uid", p.GetUid())
	e.u32("gid", p.GetGid())
	e.u32("euid", p.GetEuid())
	e.u32("auid", p.GetAuid())
	e.u32("audit_session_id", p.GetAuditSessionId())
	e.str("comm", p.GetComm())
	e.str("filename", p.GetFilename())
	if args := p.GetArgs(); len(args) > 0 {
		e.key("args")
		e.b = append(e.b, '[')
		for i, a := range args {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.quote(a)
		}
		e.b = append(e.b, ']')
	}
	e.boolean("args_truncated", p.GetArgsTruncated())
	e.str("cwd", p.GetCwd())
	e.u64("cgroup_id", p.GetCgroupId())
	e.str("cgroup_path", p.GetCgroupPath())
	e.str("container_id", p.GetContainerId())
	if pod := p.GetPod(); pod != nil {
		e.key("pod")
		e.b = append(e.b, '{')
		e.str("uid", pod.GetUid())
		e.str("name", pod.GetName())
		e.str("namespace", pod.GetNamespace())
		e.str("container_name", pod.GetContainerName())
		e.b = append(e.b, '}')
	}
	e.ts("start_time", p.GetStartTime())
	if s := p.GetSession(); s != nil {
		// Sessions are rare on exec events: let protojson write them.
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(s)
		if err != nil {
			e.err = err
		}
		e.key("session")
		e.b = append(e.b, b...)
	}
	e.boolean("from_procfs", p.GetFromProcfs())
	e.b = append(e.b, '}')
}

// quote writes s as a JSON string, escaping as protojson does.
func (e *jsonEnc) quote(s string) {
	b := append(e.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				e.err = errInvalidUTF8
			}
			i += n
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\')
		switch c {
		case '"', '\\':
			b = append(b, c)
		case '\b':
			b = append(b, 'b')
		case '\f':
			b = append(b, 'f')
		case '\n':
			b = append(b, 'n')
		case '\r':
			b = append(b, 'r')
		case '\t':
			b = append(b, 't')
		default:
			b = append(b, 'u')
			b = append(b, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			b = strconv.AppendUint(b, uint64(c), 16)
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	e.b = append(b, '"')
}

// jsonPlain holds the bytes a JSON string carries as they are: printable
// ASCII but the quote and the backslash.
var jsonPlain = func() (t [256]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

type jsonError string

func (e jsonError) Error() string { return string(e) }

const errInvalidUTF8 = jsonError("string field contains invalid UTF-8")
