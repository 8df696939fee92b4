package ingest

import (
	"fmt"

	"github.com/nodeward/nodeward/collector/wirecheck"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The wire form of an event batch is kept as it arrives and never decoded
// on the way in: the store and the live tails need each event encoded, the
// store's columns are read off the wire, and tails decode only what they
// send. Decoding every event cost a sixth of a saturated collector's CPU.

// wireRequest is a received ConnectRequest. For an event batch, msg's batch
// is left empty and events holds each event's encoding, aliasing the
// received bytes.
type wireRequest struct {
	msg    *nodewardv1.ConnectRequest
	events [][]byte
}

// codec is gRPC's protobuf codec, except that a *wireRequest keeps its
// events encoded.
type codec struct{ encoding.CodecV2 }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	w, ok := v.(*wireRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	return w.decode(data.Materialize())
}

// decode decodes raw as proto.Unmarshal would, refusing what it refuses,
// except that an event batch's events stay encoded.
func (w *wireRequest) decode(raw []byte) error {
	rest, events, isBatch, err := splitRequest(raw)
	if err != nil {
		return err
	}
	w.msg = &nodewardv1.ConnectRequest{}
	if err := proto.Unmarshal(rest, w.msg); err != nil {
		return err
	}
	if isBatch {
		w.msg.Payload = &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{}}
		w.events = events
	}
	return nil
}

// ServerCodec is the grpc.ServerOption a server hosting this service needs.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{encoding.GetCodecV2(grpcproto.Name)})
}

// Field numbers the wire walk reads (agent_service.proto, event.proto).
const (
	requestEventsField = 4 // ConnectRequest.events, one member of the payload oneof
	batchEventsField   = 1 // EventBatch.events
	eventNodeNameField = 1 // Event.node_name
	eventSequenceField = 2 // Event.sequence
	eventIndexField    = 3 // Event.index
)

// batchSchema checks event batches on the wire.
var batchSchema = wirecheck.Compile((*nodewardv1.EventBatch)(nil).ProtoReflect().Descriptor())

// splitRequest cuts the event batches out of an encoded ConnectRequest:
// rest is the request without them (req itself when it has none), events
// the batch's events in order, aliasing req, and isBatch whether the batch
// is the request's payload. It follows protobuf's rules for a repeated
// payload: EventBatch fields merge, and another member of the oneof after
// them discards them. Every batch is checked as proto.Unmarshal checks it.
func splitRequest(req []byte) (rest []byte, events [][]byte, isBatch bool, err error) {
	rest = req
	cut := false // rest is a copy of req without the batches
	for b := req; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, false, protowire.ParseError(m)
		}
		field, off := b[:n+m], len(req)-len(b)
		b = b[n+m:]
		if typ != protowire.BytesType || num != requestEventsField {
			if typ == protowire.BytesType && isOtherPayload(num) {
				events, isBatch = nil, false // another payload member replaces the batch
			}
			if cut {
				rest = append(rest, field...)
			}
			continue
		}
		if !cut {
			rest, cut = append(make([]byte, 0, len(req)), req[:off]...), true
		}
		batch, _ := protowire.ConsumeBytes(field[n:])
		if err := batchSchema.Check(batch); err != nil {
			return nil, nil, false, fmt.Errorf("event batch: %w", err)
		}
		if events, n = appendBatch(events, batch); n < 0 {
			return nil, nil, false, protowire.ParseError(n)
		}
		isBatch = true
	}
	return rest, events, isBatch, nil
}

// isOtherPayload reports whether num is a member of ConnectRequest's
// payload oneof other than events, read from the message's descriptor so a
// member added later counts too.
func isOtherPayload(num protowire.Number) bool {
	fd := (*nodewardv1.ConnectRequest)(nil).ProtoReflect().Descriptor().Fields().ByNumber(num)
	return fd != nil && fd.ContainingOneof() != nil && fd.ContainingOneof().Name() == "payload" && num != requestEventsField
}

// appendBatch appends the events of one encoded EventBatch.
func appendBatch(events [][]byte, batch []byte) ([][]byte, int) {
	for len(batch) > 0 {
		num, typ, n := protowire.ConsumeTag(batch)
		if n < 0 {
			return nil, n
		}
		batch = batch[n:]
		if typ == protowire.BytesType && num == batchEventsField {
			ev, m := protowire.ConsumeBytes(batch)
			if m < 0 {
				return nil, m
			}
			events = append(events, ev)
			batch = batch[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, batch)
		if m < 0 {
			return nil, m
		}
		batch = batch[m:]
	}
	return events, 0
}

// stampedSize bounds what stamp adds to an event for node.
func stampedSize(node string) int {
	return protowire.SizeTag(eventNodeNameField) + protowire.SizeBytes(len(node)) +
		2*(protowire.SizeTag(eventSequenceField)+protowire.SizeVarint(^uint64(0)))
}

// stamp appends event ev (encoded) with the collector's own fields set:
// node, seq and index replace whatever the agent put there.
func stamp(dst, ev []byte, node string, seq uint64, index uint32) ([]byte, error) {
	if node != "" {
		dst = protowire.AppendTag(dst, eventNodeNameField, protowire.BytesType)
		dst = protowire.AppendString(dst, node)
	}
	if seq != 0 {
		dst = protowire.AppendTag(dst, eventSequenceField, protowire.VarintType)
		dst = protowire.AppendVarint(dst, seq)
	}
	if index != 0 {
		dst = protowire.AppendTag(dst, eventIndexField, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(index))
	}
	for len(ev) > 0 {
		num, typ, n := protowire.ConsumeTag(ev)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, ev[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		if !isStamped(num, typ) {
			dst = append(dst, ev[:n+m]...)
		}
		ev = ev[n+m:]
	}
	return dst, nil
}

// isStamped reports whether a field is one stamp sets. Under another wire
// type it is an unknown field to a decoder, and kept like one.
func isStamped(num protowire.Number, typ protowire.Type) bool {
	switch num {
	case eventNodeNameField:
		return typ == protowire.BytesType
	case eventSequenceField, eventIndexField:
		return typ == protowire.VarintType
	}
	return false
}

// stampEvents returns each event of a received batch encoded with the
// collector's fields, in one allocation.
func stampEvents(wire [][]byte, node string, seq uint64) ([][]byte, error) {
	size := 0
	for _, w := range wire {
		size += len(w) + stampedSize(node)
	}
	buf := make([]byte, 0, size)
	out := make([][]byte, len(wire))
	for i, w := range wire {
		start := len(buf)
		var err error
		if buf, err = stamp(buf, w, node, seq, uint32(i)); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out, nil
}
