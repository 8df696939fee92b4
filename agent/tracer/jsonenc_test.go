package tracer

import (
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func sampleEvents(s string, n uint64, nanos int32) []*nodewardv1.Event {
	t := &timestamppb.Timestamp{Seconds: 1795000000 + int64(n%1000), Nanos: nanos}
	p := &nodewardv1.Process{
		ExecId: "node:abc:" + s, ParentExecId: "node:abc:1", Pid: uint32(n), Tid: uint32(n) + 1, Ppid: 7, Uid: 65534,
		Gid: 65534, Euid: 0, Auid: 4294967295, AuditSessionId: 4294967295, Comm: s, Filename: "/bin/" + s,
		Args: []string{"/bin/" + s, s, "", "--password=****"}, ArgsTruncated: n%2 == 0, Cwd: "/tmp/" + s,
		CgroupId: n << 33, CgroupPath: "/kubepods/" + s, ContainerId: s, Pod: &nodewardv1.Pod{Uid: s, Name: s},
		StartTime: t, FromProcfs: n%3 == 0,
	}
	if n%5 == 0 {
		p.Session = &nodewardv1.Session{Id: s, Kind: nodewardv1.SessionKind_SESSION_KIND_SSH, RemotePort: 22}
	}
	return []*nodewardv1.Event{
		{NodeName: "node-" + s, Time: t, Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
			Process: p, Parent: &nodewardv1.Process{Pid: 7, Comm: "bash"},
			Ancestors: []*nodewardv1.Process{{Pid: 1, ExecId: "x"}, {Pid: 0}}}}},
		{NodeName: "n", Sequence: n, Index: uint32(n), Time: t, Body: &nodewardv1.Event_Exit{Exit: &nodewardv1.ExitEvent{
			Process: p, ExitCode: int32(n % 256), Signal: int32(n % 9), Duration: durationpb.New(time.Duration(n) * 1000 * time.Duration(nanos%7))}}},
		{Time: t, Body: &nodewardv1.Event_Loss{Loss: &nodewardv1.LossEvent{RingBuffer: n, Queue: n / 2,
			RingBufferByKind: map[string]uint64{"exec": n, s: 3}, QueueByKind: map[string]uint64{}}}},
		{NodeName: s, Body: &nodewardv1.Event_Gap{Gap: &nodewardv1.GapEvent{Missed: n}}},
		{},
	}
}

// TestAppendJSONReadsBackAsProtojson: what the encoder writes, protojson
// reads back as the same message.
func TestAppendJSONReadsBackAsProtojson(t *testing.T) {
	for _, s := range []string{"true", "with \"quotes\" and \\", "tab\tnl\ncr\r\x00\x01\x1f\x7f", "ünïcødé ✓ \u2028", "<html>&"} {
		for _, nanos := range []int32{0, 1, 120000000, 123000, 999999999} {
			for _, ev := range sampleEvents(s, uint64(nanos)%97+5, nanos) {
				roundTrip(t, ev)
			}
		}
	}
}

func roundTrip(t *testing.T, ev *nodewardv1.Event) {
	t.Helper()
	b, err := appendJSON(nil, ev, nil)
	_, perr := protojson.Marshal(ev)
	if (err != nil) != (perr != nil) {
		t.Fatalf("appendJSON error %v, protojson error %v", err, perr)
	}
	if err != nil {
		return
	}
	var back nodewardv1.Event
	if err := protojson.Unmarshal(b, &back); err != nil {
		t.Fatalf("protojson cannot read %s: %v", b, err)
	}
	if !proto.Equal(&back, ev) {
		t.Fatalf("round trip changed the event:\n in %v\nout %v\njson %s", ev, &back, b)
	}
}

func TestAppendJSONInvalidUTF8(t *testing.T) {
	for _, ev := range sampleEvents("bad\xffutf8", 3, 0)[:3] {
		if _, err := appendJSON(nil, ev, nil); err == nil {
			t.Errorf("no error for invalid UTF-8 in %v", ev)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("true", uint64(1), int32(0))
	f.Add("a\"b\\c\n\x00", uint64(1<<40), int32(999999999))
	f.Fuzz(func(t *testing.T, s string, n uint64, nanos int32) {
		if nanos < 0 || nanos > 999999999 {
			nanos = 0
		}
		for _, ev := range sampleEvents(s, n, nanos) {
			roundTrip(t, ev)
		}
	})
}

func TestAppendSeconds(t *testing.T) {
	for _, sec := range []int64{0, 59, 86399, 86400, 951782400, 951868800, 1709164800, 1795000000, 4102444800, 253402300799, 253402300800, -1} {
		want := time.Unix(sec, 0).UTC().Format("2006-01-02T15:04:05")
		if got := string(appendSeconds(nil, sec)); got != want {
			t.Errorf("appendSeconds(%d) = %s, want %s", sec, got, want)
		}
	}
	for sec := int64(0); sec < 5e9; sec += 86400*37 + 3599 {
		want := time.Unix(sec, 0).UTC().Format("2006-01-02T15:04:05")
		if got := string(appendSeconds(nil, sec)); got != want {
			t.Fatalf("appendSeconds(%d) = %s, want %s", sec, got, want)
		}
	}
}

// TestJSONEncoderMemo: an encoder that remembers shared parents and
// ancestors writes exactly what it writes without them, across more shared
// processes than it remembers, including ones it has had to forget.
func TestJSONEncoderMemo(t *testing.T) {
	var procs []*nodewardv1.Process
	for i := range 40 {
		procs = append(procs, sampleEvents(string(rune('a'+i%26))+"x", uint64(i), int32(i)*1000)[0].GetExec().GetProcess())
	}
	var enc JSONEncoder
	hits := 0
	for i := range 500 {
		// Parents cycle through more processes than the memo holds, with
		// runs that repeat one.
		par := procs[(i/3)%len(procs)]
		ev := &nodewardv1.Event{NodeName: "n", Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
			Process: procs[i%len(procs)], Parent: par, Ancestors: []*nodewardv1.Process{procs[0], procs[(i/7)%len(procs)]}}}}
		want, err := appendJSON(nil, ev, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := enc.next
		got, err := enc.Append([]byte("prefix"), ev)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "prefix"+string(want) {
			t.Fatalf("event %d:\n got %s\nwant prefix%s", i, got, want)
		}
		if enc.next == before {
			hits++
		}
	}
	if hits == 0 {
		t.Error("the memo never served a shared process")
	}
}

func BenchmarkJSONEncoderExec(b *testing.B) {
	ev := sampleEvents("storm", 12346, 6789)[0]
	ev.GetExec().Parent = sampleEvents("bash", 7, 0)[0].GetExec().GetProcess()
	var enc JSONEncoder
	buf := make([]byte, 0, 8192)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = enc.Append(buf[:0], ev); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
