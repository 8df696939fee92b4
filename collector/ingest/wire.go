package ingest

import (
	"errors"
	"fmt"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The wire form of an event batch is kept as it arrives: the store and the
// live tails need each event encoded, and cutting it out of the received
// bytes costs a copy where encoding the decoded message again cost a fifth
// of a saturated collector's CPU.

// wireRequest is a ConnectRequest with the bytes it was decoded from.
type wireRequest struct {
	msg *nodewardv1.ConnectRequest
	raw []byte
}

// codec is gRPC's protobuf codec, except that a *wireRequest keeps its bytes.
type codec struct{ encoding.CodecV2 }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	w, ok := v.(*wireRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	w.raw = data.Materialize()
	w.msg = &nodewardv1.ConnectRequest{}
	return proto.Unmarshal(w.raw, w.msg)
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

// wireEvents returns the encoded events of a ConnectRequest carrying an
// EventBatch, in order, aliasing req. It follows protobuf's rules for a
// repeated payload: EventBatch fields merge, and another member of the
// oneof after them discards them.
func wireEvents(req []byte) ([][]byte, error) {
	var events [][]byte
	for len(req) > 0 {
		num, typ, n := protowire.ConsumeTag(req)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		req = req[n:]
		if typ == protowire.BytesType && num == requestEventsField {
			batch, m := protowire.ConsumeBytes(req)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			req = req[m:]
			if events, n = appendBatch(events, batch); n < 0 {
				return nil, protowire.ParseError(n)
			}
			continue
		}
		if typ == protowire.BytesType && isOtherPayload(num) {
			events = nil // another payload member replaces the batch
		}
		m := protowire.ConsumeFieldValue(num, typ, req)
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		req = req[m:]
	}
	return events, nil
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

var errWireMismatch = errors.New("events on the wire do not match the decoded batch")

// stampBatch returns each event of a received batch encoded with the
// collector's fields, in one allocation. events is the decoded batch; a
// walk that disagrees with it is an error, never a silent mismatch.
func stampBatch(raw []byte, events []*nodewardv1.Event, node string, seq uint64) ([][]byte, error) {
	wire, err := wireEvents(raw)
	if err != nil {
		return nil, fmt.Errorf("event batch: %w", err)
	}
	if len(wire) != len(events) {
		return nil, fmt.Errorf("%w: %d encoded, %d decoded", errWireMismatch, len(wire), len(events))
	}
	size := 0
	for _, w := range wire {
		size += len(w) + stampedSize(node)
	}
	buf := make([]byte, 0, size)
	out := make([][]byte, len(wire))
	for i, w := range wire {
		start := len(buf)
		if buf, err = stamp(buf, w, node, seq, uint32(i)); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out, nil
}
