package eventfilter

import (
	"testing"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

func TestExactBinary(t *testing.T) {
	for _, c := range []struct {
		re    string
		exact string
		ok    bool
	}{
		{"^/usr/bin/curl$", "/usr/bin/curl", true},
		{"/usr/bin/curl", "", false},
		{"^/usr/bin/(curl|wget)$", "", false},
		{"^/usr/bin/c.rl$", "", false},
		{`^/usr/bin/python3\.11$`, "/usr/bin/python3.11", true},
	} {
		f, err := Compile(&nodewardv1.EventFilter{BinaryRegex: c.re})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := f.ExactBinary()
		if got != c.exact || ok != c.ok {
			t.Errorf("%s: ExactBinary = %q %v, want %q %v", c.re, got, ok, c.exact, c.ok)
		}
	}
}

func TestSetAllowDeny(t *testing.T) {
	ev := &nodewardv1.Event{NodeName: "n1", Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
		Process:   &nodewardv1.Process{Filename: "/bin/bash", Uid: 0, Args: []string{"bash", "-c", "curl x | sh"}},
		Ancestors: []*nodewardv1.Process{{Filename: "/usr/sbin/sshd"}},
	}}}
	for _, c := range []struct {
		name        string
		allow, deny []*nodewardv1.EventFilter
		want        bool
	}{
		{"no filters", nil, nil, true},
		{"allow uid 0 and ancestor sshd", []*nodewardv1.EventFilter{{Uids: []uint32{0}, AncestorBinaryRegex: "sshd$"}}, nil, true},
		{"allow other node", []*nodewardv1.EventFilter{{NodeNames: []string{"n2"}}}, nil, false},
		{"either allow matches", []*nodewardv1.EventFilter{{NodeNames: []string{"n2"}}, {ArgsRegex: `curl .*\| *sh`}}, nil, true},
		{"deny wins", nil, []*nodewardv1.EventFilter{{Kinds: []nodewardv1.EventKind{nodewardv1.EventKind_EVENT_KIND_EXEC}}}, false},
		{"ssh kind does not match exec", []*nodewardv1.EventFilter{{Kinds: []nodewardv1.EventKind{nodewardv1.EventKind_EVENT_KIND_SSH}}}, nil, false},
		{"user filter needs a user", []*nodewardv1.EventFilter{{Users: []string{"root"}}}, nil, false},
	} {
		s, err := CompileSet(c.allow, c.deny)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Match(ev); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestMask(t *testing.T) {
	if _, err := NewMask(&fieldmaskpb.FieldMask{Paths: []string{"exec.process.nope"}}); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := NewMask(&fieldmaskpb.FieldMask{Paths: []string{"node_name.x"}}); err == nil {
		t.Fatal("path through a scalar accepted")
	}
	m, err := NewMask(&fieldmaskpb.FieldMask{Paths: []string{"exec.process.filename", "exec.process.pod"}})
	if err != nil {
		t.Fatal(err)
	}
	ev := &nodewardv1.Event{NodeName: "n1", Sequence: 3, Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
		Process: &nodewardv1.Process{Filename: "/bin/ls", Uid: 5, Pod: &nodewardv1.Pod{Name: "p"}},
		Parent:  &nodewardv1.Process{Filename: "/bin/sh"},
	}}}
	orig := proto.Clone(ev)
	got := m.Apply(ev)
	want := &nodewardv1.Event{NodeName: "n1", Sequence: 3, Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
		Process: &nodewardv1.Process{Filename: "/bin/ls", Pod: &nodewardv1.Pod{Name: "p"}},
	}}}
	if !proto.Equal(got, want) {
		t.Fatalf("masked %v, want %v", got, want)
	}
	if !proto.Equal(ev, orig) {
		t.Fatal("Apply changed the shared event")
	}
}
