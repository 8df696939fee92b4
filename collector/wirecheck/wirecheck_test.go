package wirecheck

import (
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// messages are the types the collector checks on the wire.
var messages = []proto.Message{&nodewardv1.Event{}, &nodewardv1.EventBatch{}, &nodewardv1.ConnectRequest{}}

func encodeField(num protowire.Number, typ protowire.Type, value []byte) []byte {
	b := protowire.AppendTag(nil, num, typ)
	switch typ {
	case protowire.BytesType:
		return protowire.AppendBytes(b, value)
	case protowire.StartGroupType:
		b = append(b, value...)
		return protowire.AppendTag(b, num, protowire.EndGroupType)
	}
	return append(b, value...)
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cases are encodings with protobuf's corner cases, each valid or not as
// a message of every type in messages.
func cases(t testing.TB) map[string][]byte {
	exec := &nodewardv1.Event{NodeName: "n1", Sequence: 3, Time: timestamppb.New(time.Unix(1700000000, 5)),
		Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: &nodewardv1.Process{
			Filename: "/usr/bin/curl", Args: []string{"curl", "-s"}, Uid: 1000,
			Pod: &nodewardv1.Pod{Name: "web", Namespace: "prod"}, Session: &nodewardv1.Session{Id: "s1", User: "alice"},
		}}}}
	uid := uint32(0)
	ssh := &nodewardv1.Event{Body: &nodewardv1.Event_Ssh{Ssh: &nodewardv1.SshEvent{User: "root", Uid: &uid, Duration: durationpb.New(time.Second)}}}
	loss := &nodewardv1.Event{Body: &nodewardv1.Event_Loss{Loss: &nodewardv1.LossEvent{RingBufferByKind: map[string]uint64{"exec": 3}}}}
	badUTF8 := encodeField(1, protowire.BytesType, []byte{0xff, 'x'})
	process := func(b []byte) []byte {
		return encodeField(10, protowire.BytesType, encodeField(1, protowire.BytesType, b))
	}
	return map[string][]byte{
		"empty":                 nil,
		"exec":                  mustMarshal(t, exec),
		"ssh":                   mustMarshal(t, ssh),
		"loss map":              mustMarshal(t, loss),
		"batch":                 mustMarshal(t, &nodewardv1.EventBatch{Events: []*nodewardv1.Event{exec, ssh, loss}}),
		"request":               mustMarshal(t, &nodewardv1.ConnectRequest{Sequence: 9, Payload: &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{Events: []*nodewardv1.Event{exec}}}}),
		"invalid UTF-8":         badUTF8,
		"invalid UTF-8 deep":    process(encodeField(12, protowire.BytesType, []byte{0xc3})),
		"invalid UTF-8 map key": encodeField(13, protowire.BytesType, encodeField(4, protowire.BytesType, encodeField(1, protowire.BytesType, []byte{0xfe}))),
		"string as varint":      encodeField(1, protowire.VarintType, []byte{1}),
		"message as varint":     encodeField(10, protowire.VarintType, []byte{0x80, 1}),
		"varint as bytes":       encodeField(2, protowire.BytesType, []byte{1, 2, 3}),
		"unknown field":         encodeField(99, protowire.Fixed64Type, make([]byte, 8)),
		"unknown group":         encodeField(98, protowire.StartGroupType, encodeField(1, protowire.VarintType, []byte{5})),
		"unterminated group":    protowire.AppendTag(nil, 98, protowire.StartGroupType),
		"stray end group":       protowire.AppendTag(nil, 5, protowire.EndGroupType),
		"field zero":            {0x00, 0x01},
		"field too large":       protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3),
		"reserved wire type":    {0x0e},
		"truncated length":      {0x0a, 0x05, 'a'},
		"overlong varint":       {0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
		"truncated fixed32":     {0x0d, 0x01},
		"packed map value":      encodeField(13, protowire.BytesType, encodeField(4, protowire.BytesType, encodeField(2, protowire.BytesType, []byte{1, 2}))),
	}
}

// agrees fails t unless Check and proto.Unmarshal agree on b for md.
func agrees(t *testing.T, b []byte, m proto.Message) {
	t.Helper()
	want := proto.Unmarshal(b, m.ProtoReflect().New().Interface())
	got := Compile(m.ProtoReflect().Descriptor()).Check(b)
	if (want == nil) != (got == nil) {
		t.Fatalf("%s %x: proto.Unmarshal says %v, Check says %v", m.ProtoReflect().Descriptor().Name(), b, want, got)
	}
}

func TestCheckAgreesWithUnmarshal(t *testing.T) {
	for name, b := range cases(t) {
		t.Run(name, func(t *testing.T) {
			for _, m := range messages {
				agrees(t, b, m)
			}
		})
	}
}

func TestCheckFindsProblems(t *testing.T) {
	ev := Compile((&nodewardv1.Event{}).ProtoReflect().Descriptor())
	for name, b := range cases(t) {
		err := ev.Check(b)
		switch name {
		case "invalid UTF-8", "invalid UTF-8 deep", "invalid UTF-8 map key", "batch", "unterminated group", "stray end group", "field zero",
			"field too large", "reserved wire type", "truncated length", "overlong varint", "truncated fixed32":
			if err == nil {
				t.Errorf("%s: accepted", name)
			}
		default:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

func TestCheckDepth(t *testing.T) {
	// Unknown groups nested as deep as decoders refuse.
	deep := encodeField(1, protowire.VarintType, []byte{1})
	for range maxDepth + 1 {
		deep = encodeField(98, protowire.StartGroupType, deep)
	}
	agrees(t, deep, &nodewardv1.Event{})
}

func FuzzCheck(f *testing.F) {
	for _, b := range cases(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range messages {
			agrees(t, b, m)
		}
	})
}

// BenchmarkCheck compares checking a batch of ten exec events on the wire
// with decoding it.
func BenchmarkCheck(b *testing.B) {
	batch := mustMarshal(b, &nodewardv1.EventBatch{Events: func() []*nodewardv1.Event {
		var evs []*nodewardv1.Event
		for range 10 {
			ev := &nodewardv1.Event{}
			if err := proto.Unmarshal(cases(b)["exec"], ev); err != nil {
				b.Fatal(err)
			}
			evs = append(evs, ev)
		}
		return evs
	}()})
	s := Compile((&nodewardv1.EventBatch{}).ProtoReflect().Descriptor())
	b.Run("wirecheck", func(b *testing.B) {
		for b.Loop() {
			if err := s.Check(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(batch, &nodewardv1.EventBatch{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
