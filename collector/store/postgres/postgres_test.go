package postgres_test

import (
	"context"
	"testing"

	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/postgres"
	"github.com/nodeward/nodeward/collector/store/postgres/pgtest"
	"github.com/nodeward/nodeward/collector/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		st, err := postgres.Open(context.Background(), pgtest.DSN(t), "test")
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}
