package store

import (
	"context"
	"log/slog"
	"time"
)

// Retention deletes data older than Keep in the background, in small
// batches with pauses between them, so ingest and queries never wait long
// behind a big delete.
type Retention struct {
	Keep  time.Duration
	Every time.Duration // how often a pass starts
	Batch int           // rows per delete statement
	Pause time.Duration // between batches
	Log   *slog.Logger
}

// Run prunes st until ctx ends.
func (r Retention) Run(ctx context.Context, st Store) {
	if r.Keep <= 0 {
		return
	}
	if r.Every <= 0 {
		r.Every = 5 * time.Minute
	}
	if r.Batch <= 0 {
		r.Batch = 5000
	}
	if r.Pause <= 0 {
		r.Pause = 50 * time.Millisecond
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-r.Keep)
		total := 0
		for ctx.Err() == nil {
			n, err := st.Prune(ctx, cutoff, r.Batch)
			total += n
			if err != nil {
				if ctx.Err() == nil {
					r.Log.Warn("retention: prune failed", "err", err)
				}
				break
			}
			if n < r.Batch {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(r.Pause):
			}
		}
		if total > 0 {
			r.Log.Info("retention: pruned", "rows", total, "older_than", cutoff.UTC().Format(time.RFC3339))
		}
		t.Reset(r.Every)
	}
}
