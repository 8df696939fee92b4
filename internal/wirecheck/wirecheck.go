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

// Check returns nil exactly when proto.Unmarshal would accept b as a
// message of type md: the same tags, lengths, varints and group nesting,
// and valid UTF-8 in every string field that proto3 requires it of. A
// known field under another wire type is, as there, an unknown field.
func Check(b []byte, md protoreflect.MessageDescriptor) error {
	return check(b, md, 0)
}

var errDepth = errors.New("messages nested too deeply")

func check(b []byte, md protoreflect.MessageDescriptor, depth int) error {
	if depth >= maxDepth {
		return errDepth
	}
	fields := md.Fields()
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
		if fd := fields.ByNumber(num); fd != nil && known(fd, typ) {
			m, err := checkField(b, fd, typ, depth)
			if err != nil {
				return fmt.Errorf("%s: %w", fd.Name(), err)
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

// known reports whether typ is a wire type fd decodes from; any other is
// kept as an unknown field.
func known(fd protoreflect.FieldDescriptor, typ protowire.Type) bool {
	want := wireType(fd.Kind())
	return typ == want || (typ == protowire.BytesType && fd.IsList() && packable(want))
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

// checkField checks one value of fd and returns its length.
func checkField(b []byte, fd protoreflect.FieldDescriptor, typ protowire.Type, depth int) (int, error) {
	switch typ {
	case protowire.VarintType:
		_, n := protowire.ConsumeVarint(b)
		return n, errOf(n)
	case protowire.Fixed32Type:
		_, n := protowire.ConsumeFixed32(b)
		return n, errOf(n)
	case protowire.Fixed64Type:
		_, n := protowire.ConsumeFixed64(b)
		return n, errOf(n)
	case protowire.StartGroupType:
		v, n := protowire.ConsumeGroup(fd.Number(), b)
		if n < 0 {
			return n, errOf(n)
		}
		return n, check(v, fd.Message(), depth+1)
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return n, errOf(n)
	}
	switch kind := fd.Kind(); {
	case kind == protoreflect.MessageKind:
		return n, check(v, fd.Message(), depth+1)
	case kind == protoreflect.StringKind:
		if enforceUTF8(fd) && !utf8.Valid(v) {
			return n, errors.New("invalid UTF-8")
		}
	case kind != protoreflect.BytesKind:
		return n, checkPacked(v, wireType(kind))
	}
	return n, nil
}

// checkPacked checks a packed run of numbers.
func checkPacked(b []byte, typ protowire.Type) error {
	for len(b) > 0 {
		var n int
		switch typ {
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			_, n = protowire.ConsumeFixed32(b)
		default:
			_, n = protowire.ConsumeFixed64(b)
		}
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

func errOf(n int) error {
	if n < 0 {
		return protowire.ParseError(n)
	}
	return nil
}
