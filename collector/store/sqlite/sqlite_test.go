package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/sqlite"
	"github.com/nodeward/nodeward/collector/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "nodeward.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}
