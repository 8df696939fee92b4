package sender

import (
	"os"
	"path/filepath"
	"testing"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func batch(n int, tag uint32) *nodewardv1.ConnectRequest {
	evs := make([]*nodewardv1.Event, n)
	for i := range evs {
		evs[i] = &nodewardv1.Event{Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: &nodewardv1.Process{Pid: tag, Tid: uint32(i)}}}}
	}
	return &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Events{Events: &nodewardv1.EventBatch{Events: evs}}}
}

func drain(t *testing.T, q Queue) []uint32 {
	t.Helper()
	var tags []uint32
	var after uint64
	for {
		id, req, ok, err := q.Next(after)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return tags
		}
		tags = append(tags, req.GetEvents().GetEvents()[0].GetExec().GetProcess().GetPid())
		after = id
	}
}

func TestSpoolSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(1); i <= 5; i++ {
		if _, err := s.Append(batch(10, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetOffset(100); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	// No Close: a killed agent must not lose what it appended.
	s2, err := OpenSpool(dir, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s2); len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Fatalf("after reopen: %v, want [3 4 5]", got)
	}
	if off, ok := s2.Offset(); !ok || off != 100 {
		t.Fatalf("offset = %d, %v; want 100", off, ok)
	}
	if s2.First() != 3 || s2.Len() != 3 {
		t.Fatalf("First = %d, Len = %d", s2.First(), s2.Len())
	}
	if _, err := s2.Append(batch(1, 6)); err != nil {
		t.Fatal(err)
	}
	id, _, ok, _ := s2.Next(5)
	if !ok || id != 6 {
		t.Fatalf("new item id = %d, want 6 (ids continue)", id)
	}
}

func TestSpoolCutsTornTail(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(1); i <= 3; i++ {
		if _, err := s.Append(batch(5, i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	fi, _ := os.Stat(segs[0])
	// A crash in the middle of the third record.
	if err := os.Truncate(segs[0], fi.Size()-7); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSpool(dir, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s2); len(got) != 2 {
		t.Fatalf("after a torn write: %v, want the two whole records", got)
	}
	if _, err := s2.Append(batch(5, 9)); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3, err := OpenSpool(dir, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s3); len(got) != 3 || got[2] != 9 {
		t.Fatalf("append after the cut: %v", got)
	}
}

func TestSpoolDropsOldestWhenFullAndCountsExactly(t *testing.T) {
	dir := t.TempDir()
	const max = 1 << 20
	s, err := OpenSpool(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	var appended, dropped uint64
	for i := uint32(1); i <= 2000; i++ {
		d, err := s.Append(batch(200, i))
		if err != nil {
			t.Fatal(err)
		}
		appended += 200
		dropped += d.Events
	}
	if s.Bytes() > max {
		t.Fatalf("spool holds %d bytes, bound %d", s.Bytes(), max)
	}
	if dropped == 0 {
		t.Fatal("nothing dropped; the test wrote too little")
	}
	kept := drain(t, s)
	if uint64(len(kept))*200+dropped != appended {
		t.Fatalf("kept %d events + dropped %d != appended %d", len(kept)*200, dropped, appended)
	}
	// What is kept is the newest, in order.
	if kept[len(kept)-1] != 2000 {
		t.Fatalf("newest kept = %d", kept[len(kept)-1])
	}
	for i := 1; i < len(kept); i++ {
		if kept[i] != kept[i-1]+1 {
			t.Fatalf("kept items not contiguous at %d: %d then %d", i, kept[i-1], kept[i])
		}
	}
}

func TestMemQueueDropsOldestEventsKeepsSnapshots(t *testing.T) {
	q := newMemQueue(3)
	snap := &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Snapshot{Snapshot: &nodewardv1.Snapshot{}}}
	var dropped uint64
	for _, r := range []*nodewardv1.ConnectRequest{snap, batch(4, 1), batch(4, 2), batch(4, 3), batch(4, 4)} {
		d, _ := q.Append(r)
		dropped += d.Events
	}
	if dropped != 8 || q.Len() != 3 {
		t.Fatalf("dropped %d, len %d; want 8 and 3", dropped, q.Len())
	}
	if _, r, _, _ := q.Next(0); r.GetSnapshot() == nil {
		t.Fatal("the snapshot was dropped")
	}
}

func FuzzSpoolOpen(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{4, 0, 0, 0, 1, 2, 3, 4, 1, 0, 0, 0, 0, 0, 0, 0, 8, 1})
	f.Fuzz(func(t *testing.T, seg []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), seg, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSpool(dir, 1<<20)
		if err != nil {
			return
		}
		drain(t, s)
		if _, err := s.Append(batch(1, 1)); err != nil {
			t.Fatal(err)
		}
	})
}
