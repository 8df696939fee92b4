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
	return map[string][]byte{
		"plain":                   batchRequest(t, exec("/bin/a"), exec("/bin/b"), exec("/bin/c")),
		"agent claims its fields": batchRequest(t, spoofed),
		"empty batch":             batchRequest(t),
		"unknown request field":   withUnknown,
		"batch sent twice merges": append(batchRequest(t, exec("/bin/a")), batchRequest(t, exec("/bin/b"))...),
		"hello then batch":        append(hello, batchRequest(t, exec("/bin/b"))...),
		"wrong wire types":        odd,
	}
}

// checkStamped holds stampBatch to the decoder: every stamped event decodes
// to the received event with the collector's fields set.
func checkStamped(t *testing.T, raw []byte) {
	req := &nodewardv1.ConnectRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		_, _ = wireEvents(raw) // must not panic
		return
	}
	evs := req.GetEvents().GetEvents()
	if req.GetEvents() == nil {
		return
	}
	const node, seq = "node-a", 42
	stamped, err := stampBatch(raw, evs, node, seq)
	if err != nil {
		t.Fatalf("stampBatch: %v", err)
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

func TestStampBatch(t *testing.T) {
	for name, raw := range wireCases(t) {
		t.Run(name, func(t *testing.T) { checkStamped(t, raw) })
	}
}

func TestStampBatchMatchesMarshal(t *testing.T) {
	ev := exec("/usr/bin/curl")
	raw := batchRequest(t, exec("/bin/x"), ev)
	stamped, err := stampBatch(raw, []*nodewardv1.Event{exec("/bin/x"), ev}, "node-a", 3)
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

func FuzzStampBatch(f *testing.F) {
	for _, raw := range wireCases(f) {
		f.Add(raw)
	}
	f.Fuzz(checkStamped)
}
