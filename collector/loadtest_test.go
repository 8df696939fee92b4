package main

import (
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
)

// The pre-encoded batches the simulated agents send decode to ordinary
// event batches: the templates' events, each stamped with the batch's time.
func TestAppendBatchRequestDecodes(t *testing.T) {
	templates, err := eventTemplates(newRand(), 8)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	raw := appendBatchRequest(nil, newRand(), 42, templates, 5, now)
	req := &nodewardv1.ConnectRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		t.Fatal(err)
	}
	evs := req.GetEvents().GetEvents()
	if req.GetSequence() != 42 || len(evs) != 5 {
		t.Fatalf("decoded sequence %d with %d events, want 42 and 5", req.GetSequence(), len(evs))
	}
	for i, ev := range evs {
		if !ev.GetTime().AsTime().Equal(now) {
			t.Fatalf("event %d time %v, want %v", i, ev.GetTime().AsTime(), now)
		}
		ev.Time = nil
		found := false
		for _, tpl := range templates {
			want := &nodewardv1.Event{}
			if err := proto.Unmarshal(tpl, want); err != nil {
				t.Fatal(err)
			}
			found = found || proto.Equal(ev, want)
		}
		if !found || ev.GetExec().GetProcess().GetFilename() == "" {
			t.Fatalf("event %d is none of the templates: %v", i, ev)
		}
	}
}
