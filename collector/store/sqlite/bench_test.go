package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/collector/store/sqlite"
	"github.com/nodeward/nodeward/collector/store/storetest"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// BenchmarkCommitEvents commits batches of 10 events from 1,000 concurrent
// nodes, as ingest does; b.N is the number of events.
func BenchmarkCommitEvents(b *testing.B) {
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const nodes, per = 1000, 10
	batches := b.N/per + 1
	b.ResetTimer()
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("node-%d", n)
			for s := n; s < batches; s += nodes {
				evs := make([]*nodewardv1.Event, per)
				for i := range evs {
					evs[i] = storetest.Exec(node, time.Now(), "/usr/bin/curl", 0, "curl", "-s", "https://example.com")
				}
				if _, err := st.CommitEvents(context.Background(), node, uint64(s+1), evs, nil, time.Now()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
