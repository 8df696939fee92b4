package hub

import (
	"testing"
	"time"

	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
)

func batch(n int) []*nodewardv1.Event {
	out := make([]*nodewardv1.Event, n)
	for i := range out {
		out[i] = &nodewardv1.Event{NodeName: "a", Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{}}}
	}
	return out
}

// A subscriber that does not read misses events, is told how many, and
// never blocks the publisher.
func TestSlowSubscriberGetsGapAndNeverBlocks(t *testing.T) {
	h := New(10)
	slow := h.Subscribe()
	defer slow.Close()
	start := time.Now()
	for seq := uint64(1); seq <= 25; seq++ {
		h.Publish(store.Committed{Node: "a", Seq: seq, Events: batch(4)})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publishing took %s: a slow subscriber slowed ingest", d)
	}
	// The slow one holds 8 (two batches of 4 fit in 10), missed 92.
	got := 0
	for len(slow.C) > 0 {
		b := <-slow.C
		got += len(b.Events)
		slow.Done(len(b.Events))
	}
	if got != 8 {
		t.Fatalf("slow subscriber queued %d events, want 8", got)
	}
	h.Publish(store.Committed{Node: "a", Seq: 26, Events: batch(1)})
	var b *Batch
	select {
	case b = <-slow.C:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered after the subscriber caught up")
	}
	if b.Events[0].GetGap().GetMissed() != 92 {
		t.Fatalf("first event after the loss is %v, want a gap of 92 missed", b.Events[0])
	}
	if h.Dropped() != 92 {
		t.Fatalf("Dropped() = %d, want 92", h.Dropped())
	}
}

func TestSequenceGapsAndDuplicates(t *testing.T) {
	h := New(100)
	s := h.Subscribe()
	defer s.Close()
	h.Publish(store.Committed{Node: "a", Seq: 7, Events: batch(1)}) // baseline, no gap
	h.Publish(store.Committed{Node: "a", Seq: 8})                   // a snapshot advances the sequence
	h.Publish(store.Committed{Node: "a", Seq: 8, Events: batch(1)}) // delivered twice: dropped
	h.Publish(store.Committed{Node: "a", Seq: 12, Events: batch(1)})
	var kinds []string
	for len(s.C) > 0 {
		for _, ev := range (<-s.C).Events {
			if g := ev.GetGap(); g != nil {
				kinds = append(kinds, "gap")
				if g.GetFromSequence() != 9 || g.GetToSequence() != 11 {
					t.Fatalf("gap %v, want 9..11", g)
				}
				continue
			}
			kinds = append(kinds, "exec")
		}
	}
	if len(kinds) != 3 || kinds[0] != "exec" || kinds[1] != "gap" || kinds[2] != "exec" {
		t.Fatalf("delivered %v, want exec gap exec", kinds)
	}
}

// Every subscriber gets the same batch, and its encoding is the event's.
func TestBatchEncodedOnceForAllSubscribers(t *testing.T) {
	h := New(100)
	a, b := h.Subscribe(), h.Subscribe()
	defer a.Close()
	defer b.Close()
	h.Publish(store.Committed{Node: "a", Seq: 1, Events: batch(3)})
	ba, bb := <-a.C, <-b.C
	if ba != bb {
		t.Fatal("subscribers were handed different batches: each would encode its own")
	}
	for i, ev := range ba.Events {
		enc, err := ba.Encoded(i)
		if err != nil {
			t.Fatal(err)
		}
		got := &nodewardv1.Event{}
		if err := proto.Unmarshal(enc, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, ev) {
			t.Fatalf("event %d encoded as %v, want %v", i, got, ev)
		}
	}
}

// Events published encoded reach subscribers decoded, with the same bytes
// to send; an undecodable batch is reported as missed, not delivered.
func TestEncodedBatch(t *testing.T) {
	h := New(100)
	sub := h.Subscribe()
	defer sub.Close()
	var wire [][]byte
	for _, ev := range batch(3) {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		wire = append(wire, b)
	}
	h.Publish(store.Committed{Node: "a", Seq: 1, Wire: wire})
	b := <-sub.C
	if len(b.Events) != 3 || b.Events[0].GetExec() == nil {
		t.Fatalf("delivered %v", b.Events)
	}
	if enc, err := b.Encoded(2); err != nil || string(enc) != string(wire[2]) {
		t.Fatalf("Encoded(2) = %x, %v; want the published bytes", enc, err)
	}
	sub.Done(3)
	h.Publish(store.Committed{Node: "a", Seq: 2, Wire: [][]byte{{0xff}}})
	h.Publish(store.Committed{Node: "a", Seq: 3, Wire: wire[:1]})
	if b := <-sub.C; b.Events[0].GetGap().GetMissed() != 1 {
		t.Fatalf("after an undecodable batch got %v, want a gap of 1", b.Events)
	}
}
