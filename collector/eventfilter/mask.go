package eventfilter

import (
	"fmt"
	"strings"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// Mask keeps only some fields of events; the event's identity (node,
// sequence, index, time) and gap markers are always kept whole.
type Mask struct {
	paths [][]protoreflect.FieldDescriptor
}

// NewMask validates a field mask against Event. A nil or empty mask keeps
// everything and NewMask returns nil.
func NewMask(fm *fieldmaskpb.FieldMask) (*Mask, error) {
	if len(fm.GetPaths()) == 0 {
		return nil, nil
	}
	root := (&nodewardv1.Event{}).ProtoReflect().Descriptor()
	m := &Mask{}
	for _, p := range fm.GetPaths() {
		md := root
		var chain []protoreflect.FieldDescriptor
		for i, name := range strings.Split(p, ".") {
			if md == nil {
				return nil, fmt.Errorf("field mask %q: %s is not a message", p, strings.Join(strings.Split(p, ".")[:i], "."))
			}
			fd := md.Fields().ByName(protoreflect.Name(name))
			if fd == nil {
				return nil, fmt.Errorf("field mask %q: %s has no field %q", p, md.FullName(), name)
			}
			chain = append(chain, fd)
			md = nil
			if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
				md = fd.Message()
			}
		}
		m.paths = append(m.paths, chain)
	}
	return m, nil
}

// Apply returns a copy of ev holding only the masked fields; ev is not
// changed (it is shared between subscribers).
func (m *Mask) Apply(ev *nodewardv1.Event) *nodewardv1.Event {
	if m == nil {
		return ev
	}
	out := &nodewardv1.Event{NodeName: ev.GetNodeName(), Sequence: ev.GetSequence(), Index: ev.GetIndex(), Time: ev.GetTime()}
	if g, ok := ev.GetBody().(*nodewardv1.Event_Gap); ok {
		out.Body = g
		return out
	}
	for _, chain := range m.paths {
		copyPath(ev.ProtoReflect(), out.ProtoReflect(), chain)
	}
	return out
}

func copyPath(src, dst protoreflect.Message, chain []protoreflect.FieldDescriptor) {
	fd := chain[0]
	if !src.Has(fd) {
		return
	}
	if len(chain) == 1 {
		dst.Set(fd, src.Get(fd))
		return
	}
	copyPath(src.Get(fd).Message(), dst.Mutable(fd).Message(), chain[1:])
}
