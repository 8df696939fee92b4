package postgres

import (
	"testing"
)

func TestParsePayload(t *testing.T) {
	replica, notes := parsePayload("replica-a\n1764000000000000000 ip-10-0-0-1.ec2.internal 7 e\n1764000000000000001 n2 8 s\nbroken line\n")
	if replica != "replica-a" || len(notes) != 2 {
		t.Fatalf("got %q %v", replica, notes)
	}
	if n := notes[0]; n.node != "ip-10-0-0-1.ec2.internal" || n.seq != 7 || n.snapshot || n.received != 1764000000000000000 {
		t.Fatalf("first note %+v", n)
	}
	if !notes[1].snapshot {
		t.Fatal("second note is a snapshot")
	}
}

// FuzzParsePayload: NOTIFY payloads cross the database; a malformed one
// is skipped, never a panic.
func FuzzParsePayload(f *testing.F) {
	f.Add("replica-a\n1764000000000000000 n1 7 e\n")
	f.Add("")
	f.Add("\n\n\n")
	f.Fuzz(func(t *testing.T, p string) {
		_, notes := parsePayload(p)
		for _, n := range notes {
			if n.node == "" {
				t.Fatalf("empty node from %q", p)
			}
		}
	})
}
