package store

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// EncodeToken turns a cursor into an opaque page token.
func EncodeToken(cursor any) string {
	b, err := json.Marshal(cursor)
	if err != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeToken reads a page token into cursor; an empty token leaves it as is.
func DecodeToken(token string, cursor any) error {
	if token == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return fmt.Errorf("%w: page token: %w", ErrBadRequest, err)
	}
	if err := json.Unmarshal(b, cursor); err != nil {
		return fmt.Errorf("%w: page token: %w", ErrBadRequest, err)
	}
	return nil
}

// DefaultPageSize and MaxPageSize bound every list.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// PageSize clamps a requested page size.
func PageSize(n int32) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return int(n)
}

// KeyCursor is the cursor of lists ordered by (node, key).
type KeyCursor struct {
	Node string `json:"n"`
	Key  string `json:"k"`
}

// TimeCursor is the cursor of newest-first lists: strictly older than
// (TimeNS, ID).
type TimeCursor struct {
	TimeNS int64 `json:"t"`
	ID     int64 `json:"i"`
}
