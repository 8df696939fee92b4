// Package wirecheck tells whether protobuf wire data would decode as a
// message without decoding it: the collector stores and forwards events in
// the form they arrived, and decoding them only to check them cost a sixth
// of a saturated collector's CPU.
package wirecheck

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// maxDepth bounds nested messages, as proto.Unmarshal's default does.
const maxDepth = protowire.DefaultRecursionLimit

// Schema is a message type laid out for Check: looking fields up in the
// descriptor on every field cost more than the walk itself.
type Schema struct {
	name   protoreflect.FullName
	fields []*field // by field number
	sparse map[protowire.Number]*field
}

type field struct {
	name   protoreflect.Name
	wire   protowire.Type // the wire type it decodes from
	packed protowire.Type // a repeated number's element type, else 0
	utf8   bool
	msg    *Schema // messages, groups and map entries
}

// denseFields is how far field numbers index a slice; beyond, a map.
const denseFields = 1024

// Compile lays out md and every message type it reaches.
func Compile(md protoreflect.MessageDescriptor) *Schema {
	return compile(md, map[protoreflect.FullName]*Schema{})
}

func compile(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*Schema) *Schema {
	if s, ok := seen[md.FullName()]; ok {
		return s // a type that contains itself
	}
	s := &Schema{name: md.FullName()}
	seen[md.FullName()] = s
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		f := &field{name: fd.Name(), wire: wireType(fd.Kind()), utf8: fd.Kind() == protoreflect.StringKind && enforceUTF8(fd)}
		if fd.IsList() && packable(f.wire) {
			f.packed = f.wire
		}
		if fd.Message() != nil {
			f.msg = compile(fd.Message(), seen)
		}
		if n := int(fd.Number()); n < denseFields {
			if n >= len(s.fields) {
				s.fields = append(s.fields, make([]*field, n+1-len(s.fields))...)
			}
			s.fields[n] = f
		} else {
			if s.sparse == nil {
				s.sparse = map[protowire.Number]*field{}
			}
			s.sparse[fd.Number()] = f
		}
	}
	return s
}

func (s *Schema) field(num protowire.Number) *field {
	if int(num) < len(s.fields) {
		return s.fields[num]
	}
	return s.sparse[num]
}

// Check returns nil exactly when proto.Unmarshal would accept b as a
// message of the schema's type: the same tags, lengths, varints and group
// nesting, and valid UTF-8 in every string field that proto3 requires it
// of. A known field under another wire type is, as there, an unknown field.
func (s *Schema) Check(b []byte) error {
	return s.check(b, 0)
}

var errDepth = errors.New("messages nested too deeply")

func (s *Schema) check(b []byte, depth int) error {
	if depth >= maxDepth {
		return errDepth
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("field number %d out of range", num)
		}
		b = b[n:]
		if typ == protowire.EndGroupType {
			return errors.New("end of a group that was not started")
		}
		if f := s.field(num); f != nil && (typ == f.wire || (typ == protowire.BytesType && f.packed != 0)) {
			m, err := f.check(b, num, typ, depth)
			if err != nil {
				return fmt.Errorf("%s.%s: %w", s.name, f.name, err)
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}

func packable(t protowire.Type) bool {
	return t == protowire.VarintType || t == protowire.Fixed32Type || t == protowire.Fixed64Type
}

func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.BoolKind, protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind,
		protoreflect.Uint32Kind, protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return protowire.VarintType
	case protoreflect.Sfixed32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Sfixed64Kind, protoreflect.Fixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.BytesType // strings, bytes, messages and map entries
}

// check checks one value of f under wire type typ and returns its length.
func (f *field) check(b []byte, num protowire.Number, typ protowire.Type, depth int) (int, error) {
	var n int
	switch typ {
	case protowire.StartGroupType:
		var v []byte
		if v, n = protowire.ConsumeGroup(num, b); n >= 0 {
			return n, f.msg.check(v, depth+1)
		}
	case protowire.BytesType:
		var v []byte
		if v, n = protowire.ConsumeBytes(b); n < 0 {
			break
		}
		switch {
		case f.msg != nil:
			return n, f.msg.check(v, depth+1)
		case f.utf8 && !utf8.Valid(v):
			return n, errors.New("invalid UTF-8")
		case f.packed != 0:
			return n, checkPacked(v, f.packed)
		}
	default:
		n = consumeNumber(b, typ)
	}
	if n < 0 {
		return n, protowire.ParseError(n)
	}
	return n, nil
}

// consumeNumber is the length of the number of wire type typ (varint,
// fixed32 or fixed64) that b starts with, or a negative error code.
func consumeNumber(b []byte, typ protowire.Type) int {
	var n int
	switch typ {
	case protowire.VarintType:
		_, n = protowire.ConsumeVarint(b)
	case protowire.Fixed32Type:
		_, n = protowire.ConsumeFixed32(b)
	default:
		_, n = protowire.ConsumeFixed64(b)
	}
	return n
}

// checkPacked checks a packed run of numbers.
func checkPacked(b []byte, typ protowire.Type) error {
	for len(b) > 0 {
		n := consumeNumber(b, typ)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// enforceUTF8 is protobuf's rule: proto3 strings must be UTF-8; editions
// say per field.
func enforceUTF8(fd protoreflect.FieldDescriptor) bool {
	if fd.Syntax() == protoreflect.Editions {
		if e, ok := fd.(interface{ EnforceUTF8() bool }); ok {
			return e.EnforceUTF8()
		}
	}
	return fd.Syntax() == protoreflect.Proto3
}
