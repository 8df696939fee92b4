package tracer

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Mask replaces a secret in argv.
const Mask = "****"

// Redactor masks secrets in argv before events leave the node. A value
// pattern is a regular expression matched against each argument: its first
// capture group (or, without one, the whole match) is masked. A flag in
// SecretFlags masks the argument after it ("--password hunter2").
type Redactor struct {
	values []valuePattern
	flags  map[string]bool
}

type valuePattern struct {
	re *regexp.Regexp
	// cheap: a default pattern, which cannot match an argument without '=',
	// ':' or a space, so most arguments skip it.
	cheap bool
}

// DefaultValuePatterns mask the usual ways secrets end up on command lines:
// --password=..., -p=..., SECRET_VAR=..., URLs with credentials, bearer
// tokens and AWS secret keys.
var DefaultValuePatterns = []string{
	`(?i)^--?[a-z0-9_.-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|auth)[a-z0-9_.-]*=(.+)$`,
	`(?i)^[a-z0-9_]*(?:password|passwd|secret|token|api_?key|access_?key|private_?key|credentials?)[a-z0-9_]*=(.+)$`,
	`(?i)^[a-z][a-z0-9+.-]*://[^/:@\s]*:([^@/\s]+)@`,
	`(?i)\bbearer\s+([a-z0-9._~+/=-]{8,})`,
	`(?i)(?:^|[^a-z0-9_])(?:aws_secret_access_key|aws_session_token)=(\S+)`,
}

// DefaultSecretFlags are flags whose next argument is a secret.
var DefaultSecretFlags = []string{
	"--password", "--passwd", "--pass", "--secret", "--token", "--api-key", "--apikey",
	"--access-key", "--secret-key", "--client-secret", "--private-key", "--passphrase", "--auth-token",
	"--bearer-token",
}

// NewRedactor compiles value patterns and secret flags.
func NewRedactor(valuePatterns, secretFlags []string) (*Redactor, error) {
	r := &Redactor{flags: map[string]bool{}}
	for _, p := range valuePatterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("redaction pattern %q: %w", p, err)
		}
		r.values = append(r.values, valuePattern{re: re, cheap: slices.Contains(DefaultValuePatterns, p)})
	}
	for _, f := range secretFlags {
		r.flags[f] = true
	}
	return r, nil
}

// DefaultRedactor uses DefaultValuePatterns and DefaultSecretFlags.
func DefaultRedactor() *Redactor {
	r, err := NewRedactor(DefaultValuePatterns, DefaultSecretFlags)
	if err != nil {
		panic(err) // the defaults are constants
	}
	return r
}

// Args returns args with secrets masked. It returns args itself when
// nothing matched, and a copy otherwise: args is never modified.
func (r *Redactor) Args(args []string) []string {
	if r == nil {
		return args
	}
	var out []string
	set := func(i int, v string) {
		if out == nil {
			out = append([]string(nil), args...)
		}
		out[i] = v
	}
	for i, a := range args {
		// argv[0] is the program; a flag's value never precedes it.
		if i > 0 && r.flags[args[i-1]] {
			set(i, Mask)
			continue
		}
		if i == 0 {
			continue
		}
		if v, ok := r.value(a); ok {
			set(i, v)
		}
	}
	if out == nil {
		return args
	}
	return out
}

func (r *Redactor) value(a string) (string, bool) {
	changed := false
	// Every default pattern needs '=', ':' or a space.
	skipCheap := !strings.ContainsAny(a, "=: ")
	for _, v := range r.values {
		if v.cheap && skipCheap {
			continue
		}
		m := v.re.FindStringSubmatchIndex(a)
		if m == nil {
			continue
		}
		lo, hi := m[0], m[1]
		if len(m) >= 4 && m[2] >= 0 {
			lo, hi = m[2], m[3]
		}
		if a[lo:hi] == Mask {
			continue
		}
		a = a[:lo] + Mask + a[hi:]
		changed = true
	}
	return a, changed
}
