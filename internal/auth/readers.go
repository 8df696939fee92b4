package auth

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
)

// minReaderToken is the shortest bearer token accepted in a reader file:
// anything shorter is guessable.
const minReaderToken = 16

// ReaderTokens maps bearer tokens to readers. Only SHA-256 digests of the
// tokens are kept, so a lookup's timing and a memory dump say nothing about
// a token.
type ReaderTokens struct {
	byDigest map[[sha256.Size]byte]Identity
}

// Len is how many readers the file names.
func (r *ReaderTokens) Len() int { return len(r.byDigest) }

// Lookup returns the reader a bearer token belongs to.
func (r *ReaderTokens) Lookup(token string) (Identity, bool) {
	if r == nil {
		return Identity{}, false
	}
	id, ok := r.byDigest[sha256.Sum256([]byte(token))]
	return id, ok
}

// ParseReaderTokens reads a reader token file: one "token,name,role" per
// line, role reader or admin; blank lines and lines starting with # are
// skipped. Errors name the line, never the token.
func ParseReaderTokens(r io.Reader) (*ReaderTokens, error) {
	out := &ReaderTokens{byDigest: map[[sha256.Size]byte]Identity{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	names := map[string]int{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ",")
		if len(fields) != 3 {
			return nil, fmt.Errorf("line %d: want token,name,role, got %d fields", n, len(fields))
		}
		token, name, role := strings.TrimSpace(fields[0]), strings.TrimSpace(fields[1]), strings.TrimSpace(fields[2])
		if len(token) < minReaderToken {
			return nil, fmt.Errorf("line %d: token shorter than %d characters", n, minReaderToken)
		}
		for i := 0; i < len(token); i++ {
			if token[i] <= ' ' || token[i] > '~' {
				return nil, fmt.Errorf("line %d: token holds a character a bearer header cannot carry", n)
			}
		}
		if err := ValidName(name); err != nil {
			return nil, fmt.Errorf("line %d: reader %w", n, err)
		}
		rl, err := ParseRole(role)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if prev, dup := names[name]; dup {
			return nil, fmt.Errorf("line %d: reader %q already named on line %d", n, name, prev)
		}
		d := sha256.Sum256([]byte(token))
		if _, dup := out.byDigest[d]; dup {
			return nil, fmt.Errorf("line %d: token already given to another reader", n)
		}
		names[name] = n
		out.byDigest[d] = Identity{Kind: KindReader, Name: name, Role: rl, Via: "token"}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reader tokens: %w", err)
	}
	return out, nil
}
