package sqlstore

import (
	"fmt"
	"testing"
)

func TestChunks(t *testing.T) {
	for _, c := range []struct {
		n, limit int
		want     string
	}{
		{0, 128, "[]"},
		{1, 128, "[1]"},
		{128, 128, "[128]"},
		{300, 128, "[128 128 32 8 4]"},
		{127, 128, "[64 32 16 8 4 2 1]"},
	} {
		got := chunks(c.n, c.limit)
		sum := 0
		for _, k := range got {
			sum += k
		}
		if fmt.Sprint(got) != c.want || sum != c.n {
			t.Errorf("chunks(%d, %d) = %v, want %s", c.n, c.limit, got, c.want)
		}
	}
}
