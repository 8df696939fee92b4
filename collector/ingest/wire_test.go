package ingest

import (
	"testing"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func batchRequest(t testing.TB, evs ...*nodewardv1.Event) []byte {
	t.Helper()
	b, err := proto.Marshal(&nodewardv1.ConnectRequest{Sequence: 7, Payload: &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{Events: evs}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exec(bin string) *nodewardv1.Event {
	return &nodewardv1.Event{Time: timestamppb.Now(), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: &nodewardv1.Process{Filename: bin, Args: []string{bin, "-x"}}}}}
}

// wireCases are requests whose decoding has protobuf's corner cases.
func wireCases(t testing.TB) map[string][]byte {
	spoofed := exec("/bin/spoof")
	spoofed.NodeName, spoofed.Sequence, spoofed.Index = "other-node", 99, 5
	withUnknown := protowire.AppendTag(batchRequest(t, exec("/bin/a")), 100, protowire.VarintType)
	withUnknown = protowire.AppendVarint(withUnknown, 1)
	hello, _ := proto.Marshal(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Hello{Hello: &nodewardv1.Hello{NodeName: "n"}}})
	// An event whose stamped field numbers carry the wrong wire type:
	// decoders keep them as unknown fields.
	oddEvent := protowire.AppendTag(nil, eventSequenceField, protowire.BytesType)
	oddEvent = protowire.AppendString(oddEvent, "not a number")
	oddBatch := protowire.AppendTag(nil, batchEventsField, protowire.BytesType)
	oddBatch = protowire.AppendBytes(oddBatch, oddEvent)
	odd := protowire.AppendTag(nil, requestEventsField, protowire.BytesType)
	odd = protowire.AppendBytes(odd, oddBatch)
	// An event whose node name is not UTF-8.
	badEvent := protowire.AppendString(protowire.AppendTag(nil, eventNodeNameField, protowire.BytesType), "\xff")
	badBatch := protowire.AppendTag(nil, requestEventsField, protowire.BytesType)
	badBatch = protowire.AppendBytes(badBatch, protowire.AppendBytes(protowire.AppendTag(nil, batchEventsField, protowire.BytesType), badEvent))
	return map[string][]byte{
		"batch then hello":        append(batchRequest(t, exec("/bin/b")), hello...),
		"invalid UTF-8 in event":  badBatch,
		"invalid batch replaced":  append(badBatch, hello...),
		"plain":                   batchRequest(t, exec("/bin/a"), exec("/bin/b"), exec("/bin/c")),
		"agent claims its fields": batchRequest(t, spoofed),
		"empty batch":             batchRequest(t),
		"unknown request field":   withUnknown,
		"batch sent twice merges": append(batchRequest(t, exec("/bin/a")), batchRequest(t, exec("/bin/b"))...),
		"hello then batch":        append(hello, batchRequest(t, exec("/bin/b"))...),
		"wrong wire types":        odd,
	}
}

// checkDecode holds a wireRequest's decoding to proto.Unmarshal's: the same
// requests refused, the same message, and every stamped event decoding to
// the received event with the collector's fields set.
func checkDecode(t *testing.T, raw []byte) {
	req := &nodewardv1.ConnectRequest{}
	want := proto.Unmarshal(raw, req)
	var w wireRequest
	if got := w.decode(raw); (got == nil) != (want == nil) {
		t.Fatalf("%x: proto.Unmarshal says %v, decode says %v", raw, want, got)
	}
	if want != nil {
		return
	}
	evs := req.GetEvents().GetEvents()
	if req.GetEvents() != nil {
		// The batch's own fields stay on the wire: events, and unknown ones.
		req.Payload = &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{}}
	}
	if !proto.Equal(w.msg, req) {
		t.Fatalf("%x: decoded %v, want %v", raw, w.msg, req)
	}
	if len(w.events) != len(evs) {
		t.Fatalf("%x: %d events on the wire, %d decoded", raw, len(w.events), len(evs))
	}
	const node, seq = "node-a", 42
	stamped, err := stampEvents(w.events, node, seq)
	if err != nil {
		t.Fatalf("stampEvents: %v", err)
	}
	for i, ev := range evs {
		ev.NodeName, ev.Sequence, ev.Index = node, seq, uint32(i)
		got := &nodewardv1.Event{}
		if err := proto.Unmarshal(stamped[i], got); err != nil {
			t.Fatalf("event %d: stamped form does not decode: %v", i, err)
		}
		if !proto.Equal(got, ev) {
			t.Fatalf("event %d: stamped form decodes to %v, want %v", i, got, ev)
		}
	}
}

func TestDecode(t *testing.T) {
	for name, raw := range wireCases(t) {
		t.Run(name, func(t *testing.T) { checkDecode(t, raw) })
	}
}

func TestStampMatchesMarshal(t *testing.T) {
	ev := exec("/usr/bin/curl")
	var w wireRequest
	if err := w.decode(batchRequest(t, exec("/bin/x"), ev)); err != nil {
		t.Fatal(err)
	}
	stamped, err := stampEvents(w.events, "node-a", 3)
	if err != nil {
		t.Fatal(err)
	}
	ev.NodeName, ev.Sequence, ev.Index = "node-a", 3, 1
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if string(stamped[1]) != string(want) {
		t.Fatalf("stamped %x\nmarshal %x", stamped[1], want)
	}
}

func FuzzDecode(f *testing.F) {
	for _, raw := range wireCases(f) {
		f.Add(raw)
	}
	f.Fuzz(checkDecode)
}
