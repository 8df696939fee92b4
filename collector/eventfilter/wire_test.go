package eventfilter

import (
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func encode(t testing.TB, ev *nodewardv1.Event) []byte {
	t.Helper()
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tag(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }

func bytesField(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(tag(num, protowire.BytesType), v)
}

// wireEvents are encodings with the decoding rules ExtractWire follows.
func wireEvents(t testing.TB) map[string][]byte {
	at := timestamppb.New(time.Date(2026, 11, 28, 4, 0, 0, 123, time.UTC))
	proc := &nodewardv1.Process{Filename: "/usr/bin/curl", Comm: "curl", Uid: 1000, ContainerId: "c1",
		Pod: &nodewardv1.Pod{Name: "web", Namespace: "prod"}, Session: &nodewardv1.Session{Id: "s1", User: "alice"}}
	uid := uint32(0)
	exec := encode(t, &nodewardv1.Event{Time: at, Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: proc}}})
	exit := encode(t, &nodewardv1.Event{Time: at, Body: &nodewardv1.Event_Exit{Exit: &nodewardv1.ExitEvent{Process: &nodewardv1.Process{Comm: "sh"}}}})
	ssh := encode(t, &nodewardv1.Event{Body: &nodewardv1.Event_Ssh{Ssh: &nodewardv1.SshEvent{User: "root", Uid: &uid, SessionId: "x"}}})
	onlyFilename := bytesField(10, bytesField(1, bytesField(processFilename, []byte("/bin/a"))))
	onlyComm := bytesField(10, bytesField(1, bytesField(processComm, []byte("b"))))
	return map[string][]byte{
		"exec":                   encode(t, &nodewardv1.Event{Time: at, Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: proc}}}),
		"exec without a process": encode(t, &nodewardv1.Event{Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{}}}),
		"exec empty process":     encode(t, &nodewardv1.Event{Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: &nodewardv1.Process{}}}}),
		"exit":                   exit,
		"ssh":                    ssh,
		"ssh without uid":        encode(t, &nodewardv1.Event{Body: &nodewardv1.Event_Ssh{Ssh: &nodewardv1.SshEvent{User: "u"}}}),
		"gap":                    encode(t, &nodewardv1.Event{Body: &nodewardv1.Event_Gap{Gap: &nodewardv1.GapEvent{Missed: 4}}}),
		"no body":                encode(t, &nodewardv1.Event{Time: at}),
		"merged process":         append(append([]byte{}, onlyFilename...), onlyComm...),
		"oneof switched back":    append(append(append([]byte{}, onlyFilename...), exit...), onlyComm...),
		"exec then ssh":          append(append([]byte{}, exec...), ssh...),
		"body as varint":         append(append([]byte{}, exec...), protowire.AppendVarint(tag(12, protowire.VarintType), 1)...),
		"uid as bytes":           bytesField(10, bytesField(1, bytesField(processUID, []byte{1}))),
		"time twice":             append(encode(t, &nodewardv1.Event{Time: at}), bytesField(eventTime, protowire.AppendVarint(tag(timestampNanos, protowire.VarintType), 7))...),
		"negative nanos":         bytesField(eventTime, protowire.AppendVarint(tag(timestampNanos, protowire.VarintType), ^uint64(0))),
	}
}

// sameAsDecoded fails t unless ExtractWire agrees with Extract on every
// encoding proto.Unmarshal accepts.
func sameAsDecoded(t *testing.T, b []byte) {
	ev := &nodewardv1.Event{}
	if proto.Unmarshal(b, ev) != nil {
		return
	}
	got, err := ExtractWire(b)
	if err != nil {
		t.Fatalf("%x: ExtractWire: %v", b, err)
	}
	if want := Extract(ev); got != want {
		t.Fatalf("%x:\nExtractWire %+v\nExtract     %+v", b, got, want)
	}
}

func TestExtractWire(t *testing.T) {
	for name, b := range wireEvents(t) {
		t.Run(name, func(t *testing.T) { sameAsDecoded(t, b) })
	}
	c, err := ExtractWire(wireEvents(t)["exec"])
	if err != nil {
		t.Fatal(err)
	}
	if c.Binary != "/usr/bin/curl" || c.UID != 1000 || c.Pod != "web" || c.User != "alice" || c.Kind != nodewardv1.EventKind_EVENT_KIND_EXEC {
		t.Errorf("exec columns: %+v", c)
	}
	if _, err := ExtractWire([]byte{0x0a, 0x05}); err == nil {
		t.Error("truncated event accepted")
	}
}

func FuzzExtractWire(f *testing.F) {
	for _, b := range wireEvents(f) {
		f.Add(b)
	}
	f.Fuzz(sameAsDecoded)
}

func BenchmarkExtractWire(b *testing.B) {
	ev := wireEvents(b)["exec"]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ExtractWire(ev); err != nil {
			b.Fatal(err)
		}
	}
}
