package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The signature algorithms a service-account issuer uses; "none" and the
// HMAC algorithms are never accepted.
var tokenAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// TokenConfig says which projected service-account tokens make an agent.
type TokenConfig struct {
	Issuer   string // must equal the token's iss
	Audience string // must be among the token's aud (default "nodeward")
	// ServiceAccounts, as NAMESPACE/NAME, are the only accounts whose
	// tokens are agents; empty accepts any account (logged at start).
	ServiceAccounts []string
	// MaxLifetime refuses tokens valid for longer (default 24h): a
	// projected token is short-lived, a legacy Secret token never expires.
	MaxLifetime time.Duration
	// Leeway for clock skew on exp, nbf and iat (default 30s).
	Leeway time.Duration
	Now    func() time.Time
}

// TokenVerifier turns a projected service-account token into an agent
// Identity.
type TokenVerifier struct {
	cfg  TokenConfig
	keys *KeySet
}

// NewTokenVerifier checks cfg and returns a verifier using keys.
func NewTokenVerifier(cfg TokenConfig, keys *KeySet) (*TokenVerifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("the token issuer is required to verify tokens")
	}
	if cfg.Audience == "" {
		cfg.Audience = "nodeward"
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = 24 * time.Hour
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, sa := range cfg.ServiceAccounts {
		ns, name, ok := strings.Cut(sa, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("service account %q: want NAMESPACE/NAME", sa)
		}
	}
	return &TokenVerifier{cfg: cfg, keys: keys}, nil
}

// kubernetesClaims is the private claim the Kubernetes token issuer adds.
// node is present on Kubernetes 1.30+ (ServiceAccountTokenPodNodeInfo) for
// tokens bound to a pod.
type kubernetesClaims struct {
	Kube *struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
		Node *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"node"`
	} `json:"kubernetes.io"`
}

// LooksLikeJWT tells a compact JWS from an opaque bearer token.
func LooksLikeJWT(s string) bool { return strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ") }

// Verify checks raw's signature against the issuer's keys and its claims,
// and returns the agent it proves. A refusal is a *Refusal.
func (v *TokenVerifier) Verify(ctx context.Context, raw string) (Identity, error) {
	tok, err := jwt.ParseSigned(raw, tokenAlgorithms)
	if err != nil {
		return Identity{}, &Refusal{Reason: ReasonMalformedToken, Detail: "not a signed JWT with an accepted algorithm"}
	}
	if len(tok.Headers) != 1 {
		return Identity{}, &Refusal{Reason: ReasonMalformedToken, Detail: "want exactly one signature"}
	}
	kid := tok.Headers[0].KeyID
	keys, err := v.keys.Keys(ctx, kid)
	if err != nil {
		return Identity{}, &Refusal{Reason: ReasonVerifierDown, Detail: "issuer keys unavailable: " + err.Error()}
	}
	if len(keys) == 0 {
		return Identity{}, &Refusal{Reason: ReasonBadSignature, Detail: fmt.Sprintf("no issuer key with id %q", kid)}
	}
	var (
		std  jwt.Claims
		kube kubernetesClaims
		ok   bool
	)
	for _, k := range keys {
		if err := tok.Claims(k.Key, &std, &kube); err == nil {
			ok = true
			break
		}
	}
	if !ok {
		return Identity{}, &Refusal{Reason: ReasonBadSignature, Detail: fmt.Sprintf("signature does not verify with the issuer's key %q", kid)}
	}
	now := v.cfg.Now()
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: now}, v.cfg.Leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return Identity{}, &Refusal{Reason: ReasonTokenExpired, Detail: fmt.Sprintf("token of %s expired at %s", std.Subject, std.Expiry.Time().UTC().Format(time.RFC3339))}
	case errors.Is(err, jwt.ErrInvalidAudience):
		return Identity{}, &Refusal{Reason: ReasonWrongAudience, Detail: fmt.Sprintf("token of %s is for audience %q, not %q", std.Subject, []string(std.Audience), v.cfg.Audience)}
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return Identity{}, &Refusal{Reason: ReasonWrongIssuer, Detail: fmt.Sprintf("token issued by %q, not %q", std.Issuer, v.cfg.Issuer)}
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return Identity{}, &Refusal{Reason: ReasonTokenNotYetValid, Detail: fmt.Sprintf("token of %s not valid yet", std.Subject)}
	case err != nil:
		return Identity{}, &Refusal{Reason: ReasonMalformedToken, Detail: "claims: " + err.Error()}
	}
	if std.Expiry == nil {
		return Identity{}, &Refusal{Reason: ReasonTokenNotShortLive, Detail: fmt.Sprintf("token of %s never expires (a legacy Secret token?); mount a projected token", std.Subject)}
	}
	start := std.IssuedAt
	if start == nil {
		start = std.NotBefore
	}
	if start == nil {
		return Identity{}, &Refusal{Reason: ReasonTokenNotShortLive, Detail: fmt.Sprintf("token of %s has no iat or nbf, so its lifetime is unknown", std.Subject)}
	}
	if life := std.Expiry.Time().Sub(start.Time()); life > v.cfg.MaxLifetime {
		return Identity{}, &Refusal{Reason: ReasonTokenNotShortLive, Detail: fmt.Sprintf("token of %s is valid for %s, more than %s", std.Subject, life, v.cfg.MaxLifetime)}
	}
	if kube.Kube == nil {
		return Identity{}, &Refusal{Reason: ReasonNoNodeClaim, Detail: fmt.Sprintf("token of %s is not a Kubernetes service-account token", std.Subject)}
	}
	ns, sa := kube.Kube.Namespace, kube.Kube.ServiceAccount.Name
	if want := "system:serviceaccount:" + ns + ":" + sa; std.Subject != want {
		return Identity{}, &Refusal{Reason: ReasonMalformedToken, Detail: fmt.Sprintf("subject %q does not match the service account %q", std.Subject, want)}
	}
	if len(v.cfg.ServiceAccounts) > 0 && !contains(v.cfg.ServiceAccounts, ns+"/"+sa) {
		return Identity{}, &Refusal{Reason: ReasonServiceAccount, Detail: fmt.Sprintf("service account %s/%s is not an agent's", ns, sa)}
	}
	if kube.Kube.Node == nil || kube.Kube.Node.Name == "" {
		return Identity{}, &Refusal{Reason: ReasonNoNodeClaim, Detail: fmt.Sprintf("token of %s names no node (needs a pod-bound token from Kubernetes 1.30+)", std.Subject)}
	}
	node := kube.Kube.Node.Name
	if err := ValidName(node); err != nil {
		return Identity{}, &Refusal{Reason: ReasonNoNodeClaim, Detail: "node claim: " + err.Error()}
	}
	return Identity{Kind: KindAgent, Node: node, Name: std.Subject, Via: "token"}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
