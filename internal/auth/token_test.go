package auth

import (
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/nodeward/nodeward/internal/auth/authtest"
)

const testIssuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF"

func fileKeySet(t *testing.T, jwks []byte) *KeySet {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	authtest.WriteFile(t, path, jwks)
	ks, err := NewKeySet(context.Background(), JWKSConfig{Source: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestTokenVerifier(t *testing.T) {
	rsaKey := authtest.NewRSASigner(t, "rsa-1")
	ecKey := authtest.NewECSigner(t, "ec-1")
	rogue := authtest.NewRSASigner(t, "rsa-1") // same key id, other key
	unknown := authtest.NewECSigner(t, "ec-unknown")
	ks := fileKeySet(t, authtest.JWKS(t, rsaKey, ecKey))
	v, err := NewTokenVerifier(TokenConfig{Issuer: testIssuer, ServiceAccounts: []string{"nodeward/agent"}}, ks)
	if err != nil {
		t.Fatal(err)
	}
	good := func() authtest.Claims {
		return authtest.AgentClaims(testIssuer, "ip-10-0-1-17.eu-west-1.compute.internal")
	}
	with := func(f func(*authtest.Claims)) authtest.Claims { c := good(); f(&c); return c }
	now := time.Now()

	for _, tc := range []struct {
		name   string
		token  string
		reason Reason // empty: accepted
	}{
		{"rsa", rsaKey.Token(t, good()), ""},
		{"ec", ecKey.Token(t, good()), ""},
		{"audience among several", rsaKey.Token(t, with(func(c *authtest.Claims) { c.Audience = []string{"sts.amazonaws.com", "nodeward"} })), ""},
		{"expired", rsaKey.Token(t, with(func(c *authtest.Claims) { c.IssuedAt, c.Expiry = now.Add(-2*time.Hour), now.Add(-time.Hour) })), ReasonTokenExpired},
		{"within leeway", rsaKey.Token(t, with(func(c *authtest.Claims) { c.Expiry = now.Add(-10 * time.Second) })), ""},
		{"wrong audience", ecKey.Token(t, with(func(c *authtest.Claims) { c.Audience = []string{"https://kubernetes.default.svc"} })), ReasonWrongAudience},
		{"wrong issuer", ecKey.Token(t, with(func(c *authtest.Claims) { c.Issuer = "https://evil.example" })), ReasonWrongIssuer},
		{"issued in the future", ecKey.Token(t, with(func(c *authtest.Claims) { c.IssuedAt = now.Add(10 * time.Minute) })), ReasonTokenNotYetValid},
		{"never expires", ecKey.Token(t, with(func(c *authtest.Claims) { c.Expiry = time.Time{} })), ReasonTokenNotShortLive},
		{"a year long", ecKey.Token(t, with(func(c *authtest.Claims) { c.Expiry = now.Add(365 * 24 * time.Hour) })), ReasonTokenNotShortLive},
		{"no node claim", ecKey.Token(t, with(func(c *authtest.Claims) { c.Node = "" })), ReasonNoNodeClaim},
		{"bad node name", ecKey.Token(t, with(func(c *authtest.Claims) { c.Node = "Node_A" })), ReasonNoNodeClaim},
		{"other service account", ecKey.Token(t, with(func(c *authtest.Claims) { c.ServiceAccount = "default" })), ReasonServiceAccount},
		{"other namespace", ecKey.Token(t, with(func(c *authtest.Claims) { c.Namespace = "kube-system" })), ReasonServiceAccount},
		{"key id reused by another key", rogue.Token(t, good()), ReasonBadSignature},
		{"unknown key id", unknown.Token(t, good()), ReasonBadSignature},
		{"tampered payload", tamper(t, rsaKey.Token(t, good())), ReasonBadSignature},
		{"alg none", unsigned(t), ReasonMalformedToken},
		{"HS256 with the public key as secret", hmacToken(t), ReasonMalformedToken},
		{"garbage", "eyJhbGciOi.not.atoken", ReasonMalformedToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.token)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				want := Identity{Kind: KindAgent, Node: "ip-10-0-1-17.eu-west-1.compute.internal", Name: "system:serviceaccount:nodeward:agent", Via: "token"}
				if id != want {
					t.Fatalf("identity %+v, want %+v", id, want)
				}
				return
			}
			var r *Refusal
			if !errors.As(err, &r) || r.Reason != tc.reason {
				t.Fatalf("got %v (identity %+v), want refusal %s", err, id, tc.reason)
			}
			if sig := strings.Split(tc.token+"..", ".")[2]; strings.Contains(r.Detail, tc.token) || sig != "" && strings.Contains(r.Detail, sig) {
				t.Errorf("refusal detail carries the token: %s", r.Detail)
			}
		})
	}
}

// tamper changes the node in a signed token's payload without re-signing.
func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	tt, err := jwt.ParseSigned(tok, tokenAlgorithms)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := tt.UnsafeClaimsWithoutVerification(&m); err != nil {
		t.Fatal(err)
	}
	m["kubernetes.io"].(map[string]any)["node"].(map[string]any)["name"] = "other-node"
	parts[1] = b64json(t, m)
	return strings.Join(parts, ".")
}

func unsigned(t *testing.T) string {
	c := authtest.AgentClaims(testIssuer, "node-a")
	return b64json(t, map[string]string{"alg": "none", "typ": "JWT"}) + "." +
		b64json(t, map[string]any{"iss": c.Issuer, "aud": c.Audience, "exp": c.Expiry.Unix(), "iat": c.IssuedAt.Unix(),
			"sub": "system:serviceaccount:nodeward:agent",
			"kubernetes.io": map[string]any{"namespace": "nodeward", "serviceaccount": map[string]string{"name": "agent"},
				"node": map[string]string{"name": "node-a"}}}) + "."
}

func hmacToken(t *testing.T) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("public-key-bytes-used-as-secret!")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := authtest.AgentClaims(testIssuer, "node-a")
	raw, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: c.Issuer, Audience: c.Audience, Expiry: jwt.NewNumericDate(c.Expiry)}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestJWKSFromHTTPS serves the key set from a real TLS server, checks the
// collector trusts it only through the given CA, and that a token signed
// by a key the issuer added after start is accepted after one re-fetch.
func TestJWKSFromHTTPS(t *testing.T) {
	k1 := authtest.NewRSASigner(t, "k1")
	k2 := authtest.NewECSigner(t, "k2")
	var (
		mu      sync.Mutex
		current = authtest.JWKS(t, k1)
		fetches atomic.Int32
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(current)
	}))
	defer srv.Close()
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	if _, err := NewKeySet(ctx, JWKSConfig{Source: srv.URL}, log); err == nil {
		t.Fatal("a JWKS server the system roots do not trust was accepted")
	}
	if _, err := NewKeySet(ctx, JWKSConfig{Source: "http://" + strings.TrimPrefix(srv.URL, "https://")}, log); err == nil {
		t.Fatal("a plaintext JWKS URL was accepted")
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	authtest.WriteFile(t, ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	ks, err := NewKeySet(ctx, JWKSConfig{Source: srv.URL + "/openid/v1/jwks", CAFile: ca, MinRefetch: time.Nanosecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewTokenVerifier(TokenConfig{Issuer: testIssuer}, ks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, k1.Token(t, authtest.AgentClaims(testIssuer, "node-a"))); err != nil {
		t.Fatalf("k1 token: %v", err)
	}
	tok2 := k2.Token(t, authtest.AgentClaims(testIssuer, "node-b"))
	var r *Refusal
	if _, err := v.Verify(ctx, tok2); !errors.As(err, &r) || r.Reason != ReasonBadSignature {
		t.Fatalf("token of a key not yet published: %v", err)
	}
	mu.Lock()
	current = authtest.JWKS(t, k1, k2)
	mu.Unlock()
	before := fetches.Load()
	id, err := v.Verify(ctx, tok2)
	if err != nil || id.Node != "node-b" {
		t.Fatalf("token of the rotated-in key: %+v, %v", id, err)
	}
	if got := fetches.Load() - before; got != 1 {
		t.Errorf("%d fetches to learn the new key, want 1", got)
	}
}

// TestJWKSFileReload rewrites the key file and expects the new key to be
// used without a restart.
func TestJWKSFileReload(t *testing.T) {
	k1 := authtest.NewRSASigner(t, "k1")
	k2 := authtest.NewRSASigner(t, "k2")
	path := filepath.Join(t.TempDir(), "jwks.json")
	authtest.WriteFile(t, path, authtest.JWKS(t, k1))
	ks, err := NewKeySet(context.Background(), JWKSConfig{Source: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewTokenVerifier(TokenConfig{Issuer: testIssuer}, ks)
	if err != nil {
		t.Fatal(err)
	}
	tok2 := k2.Token(t, authtest.AgentClaims(testIssuer, "node-a"))
	if _, err := v.Verify(context.Background(), tok2); err == nil {
		t.Fatal("token of an unpublished key accepted")
	}
	authtest.WriteFile(t, path, authtest.JWKS(t, k2))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := v.Verify(context.Background(), tok2)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new key never picked up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := v.Verify(context.Background(), k1.Token(t, authtest.AgentClaims(testIssuer, "node-a"))); err == nil {
		t.Error("token of a withdrawn key still accepted")
	}
}

// FuzzVerify feeds mutated tokens to the verifier: it must never panic, and
// whatever it accepts must prove exactly the identity the issuer signed.
func FuzzVerify(f *testing.F) {
	rsaKey := authtest.NewRSASigner(f, "rsa-1")
	ecKey := authtest.NewECSigner(f, "ec-1")
	path := filepath.Join(f.TempDir(), "jwks.json")
	authtest.WriteFile(f, path, authtest.JWKS(f, rsaKey, ecKey))
	ks, err := NewKeySet(context.Background(), JWKSConfig{Source: path}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	v, err := NewTokenVerifier(TokenConfig{Issuer: testIssuer}, ks)
	if err != nil {
		f.Fatal(err)
	}
	c := authtest.AgentClaims(testIssuer, "node-a")
	c.Expiry = time.Now().Add(23 * time.Hour) // valid for the whole fuzzing run
	f.Add(rsaKey.Token(f, c))
	f.Add(ecKey.Token(f, c))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	want := Identity{Kind: KindAgent, Node: "node-a", Name: "system:serviceaccount:nodeward:agent", Via: "token"}
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(context.Background(), tok)
		if err != nil {
			var r *Refusal
			if !errors.As(err, &r) {
				t.Fatalf("error is not a refusal: %v", err)
			}
			return
		}
		if id != want {
			t.Fatalf("accepted %q as %+v", tok, id)
		}
	})
}
