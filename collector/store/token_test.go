package store

import (
	"errors"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	in := TimeCursor{TimeNS: 1764000000000000000, ID: 42}
	var out TimeCursor
	if err := DecodeToken(EncodeToken(in), &out); err != nil || out != in {
		t.Fatalf("round trip: %v %v", out, err)
	}
	if err := DecodeToken("%%%", &out); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("garbage token: %v, want ErrBadRequest", err)
	}
}

// FuzzDecodeToken: a page token comes from the client; any string must be
// refused cleanly or decoded, never panic.
func FuzzDecodeToken(f *testing.F) {
	f.Add(EncodeToken(TimeCursor{TimeNS: 1, ID: 2}))
	f.Add(EncodeToken(KeyCursor{Node: "n", Key: "k"}))
	f.Add("")
	f.Add("e30")
	f.Fuzz(func(t *testing.T, s string) {
		var tc TimeCursor
		_ = DecodeToken(s, &tc)
		var kc KeyCursor
		_ = DecodeToken(s, &kc)
	})
}
