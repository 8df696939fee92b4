package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ParseJWKS reads a JSON Web Key Set and keeps its public signing keys.
// Private keys are refused: a key set carrying one was published by mistake.
func ParseJWKS(r io.Reader) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	dec := json.NewDecoder(io.LimitReader(r, maxCredentialFile))
	if err := dec.Decode(&set); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	out := &jose.JSONWebKeySet{}
	for i, k := range set.Keys {
		if !k.Valid() {
			return nil, fmt.Errorf("JWKS key %d (kid %q): not a valid key", i, k.KeyID)
		}
		if !k.IsPublic() {
			return nil, fmt.Errorf("JWKS key %d (kid %q): a private key in a public key set", i, k.KeyID)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		out.Keys = append(out.Keys, k)
	}
	if len(out.Keys) == 0 {
		return nil, errors.New("JWKS holds no signing key")
	}
	return out, nil
}

// JWKSConfig says where an issuer's keys are.
type JWKSConfig struct {
	// Source is a file path or an https:// URL.
	Source string
	// CAFile verifies the URL's server instead of the system roots.
	CAFile string
	// Refresh is how often a URL is fetched again (default 5 minutes); a file
	// is re-read when it changes.
	Refresh time.Duration
	// MinRefetch bounds fetches caused by tokens with an unknown key id
	// (default 10 seconds), so forged key ids cannot hammer the issuer.
	MinRefetch time.Duration
}

// KeySet is an issuer's signing keys, cached and refreshed. A failed
// refresh keeps the keys it has and is logged.
type KeySet struct {
	cfg    JWKSConfig
	log    *slog.Logger
	file   *fileCache[*jose.JSONWebKeySet]
	client *http.Client
	url    string

	fetchMu sync.Mutex
	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	fetched time.Time
	tried   time.Time
}

// NewKeySet loads the key set once, so a wrong source fails at start.
func NewKeySet(ctx context.Context, cfg JWKSConfig, log *slog.Logger) (*KeySet, error) {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Minute
	}
	if cfg.MinRefetch <= 0 {
		cfg.MinRefetch = 10 * time.Second
	}
	ks := &KeySet{cfg: cfg, log: log}
	if !strings.Contains(cfg.Source, "://") {
		fc, err := newFileCache(log, func(b [][]byte) (*jose.JSONWebKeySet, error) {
			return ParseJWKS(strings.NewReader(string(b[0])))
		}, cfg.Source)
		if err != nil {
			return nil, fmt.Errorf("JWKS file: %w", err)
		}
		ks.file = fc
		return ks, nil
	}
	u, err := url.Parse(cfg.Source)
	if err != nil {
		return nil, fmt.Errorf("JWKS URL: %w", err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("JWKS URL %q: only https is accepted, keys fetched in plaintext could be swapped", cfg.Source)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		b, err := readBounded(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("JWKS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("JWKS CA %s: no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	ks.url = u.String()
	ks.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	if err := ks.fetch(ctx); err != nil {
		return nil, err
	}
	return ks, nil
}

// fetch gets the key set over https. It runs without ks.mu held, so
// verifications with known keys go on while the issuer is slow; fetchMu
// keeps it to one fetch at a time.
func (ks *KeySet) fetch(ctx context.Context) error {
	ks.fetchMu.Lock()
	defer ks.fetchMu.Unlock()
	start := time.Now()
	ks.mu.Lock()
	ks.tried = start
	ks.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return fmt.Errorf("JWKS %s: %w", ks.url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch JWKS %s: %s", ks.url, resp.Status)
	}
	set, err := ParseJWKS(resp.Body)
	if err != nil {
		return fmt.Errorf("JWKS %s: %w", ks.url, err)
	}
	ks.mu.Lock()
	ks.keys, ks.fetched = set, start
	ks.mu.Unlock()
	return nil
}

// due says whether a fetch may start now: the last one began more than
// MinRefetch ago. It claims the slot, so concurrent callers do not pile up.
func (ks *KeySet) due() bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if time.Since(ks.tried) <= ks.cfg.MinRefetch {
		return false
	}
	ks.tried = time.Now()
	return true
}

func (ks *KeySet) current(kid string) ([]jose.JSONWebKey, bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return pick(ks.keys, kid), time.Since(ks.fetched) > ks.cfg.Refresh
}

// Keys returns the keys that may have signed a token with key id kid: the
// one with that id, or every key when the token names none.
func (ks *KeySet) Keys(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	if ks.file != nil {
		return pick(ks.file.get(), kid), nil
	}
	keys, stale := ks.current(kid)
	if stale && ks.due() {
		if err := ks.fetch(ctx); err != nil {
			ks.log.Warn("JWKS refresh failed, keeping the keys fetched before", "err", err)
		}
		keys, _ = ks.current(kid)
	}
	if len(keys) == 0 && kid != "" && ks.due() {
		// The issuer may have rotated its key since the last fetch.
		if err := ks.fetch(ctx); err != nil {
			return nil, err
		}
		keys, _ = ks.current(kid)
	}
	return keys, nil
}

func pick(set *jose.JSONWebKeySet, kid string) []jose.JSONWebKey {
	if set == nil {
		return nil
	}
	if kid == "" {
		return set.Keys
	}
	return set.Key(kid)
}
