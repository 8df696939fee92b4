package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// ServerConfig is everything the collector's auth flags set.
type ServerConfig struct {
	CertFile, KeyFile string // serving certificate (TLS)
	ClientCAFile      string // CA of agent and reader client certificates
	JWKS              string // file or https URL of the token issuer's keys
	JWKSCAFile        string // CA for an https JWKS URL (default: system roots)
	Issuer            string
	Audience          string   // default "nodeward"
	ServiceAccounts   []string // NAMESPACE/NAME of agents' service accounts; empty: any
	ReaderTokensFile  string

	Log *slog.Logger
	// Refused is called once per refused call with its reason (e.g. to
	// increment a Prometheus counter); it may be nil.
	Refused func(Reason)
	Now     func() time.Time
}

// Configured says whether any credential or TLS setting was given.
func (c *ServerConfig) Configured() bool {
	return c.CertFile != "" || c.KeyFile != "" || c.ClientCAFile != "" || c.JWKS != "" || c.Issuer != "" || c.ReaderTokensFile != ""
}

// IsLoopback says whether a listen address only accepts connections from
// this host.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Rule says who may call the methods under one prefix.
type Rule struct {
	Public bool   // anyone, unauthenticated (health checks)
	Agents bool   // agents
	Roles  []Role // readers with one of these roles
}

// Policy maps full-method prefixes ("/nodeward.v1.QueryService/") to rules;
// the longest matching prefix decides, and a method no prefix matches is
// refused.
type Policy map[string]Rule

func (p Policy) rule(method string) (Rule, bool) {
	best, found := "", false
	var r Rule
	for prefix, rule := range p {
		if strings.HasPrefix(method, prefix) && (!found || len(prefix) > len(best)) {
			best, r, found = prefix, rule, true
		}
	}
	return r, found
}

// Authenticator authenticates and authorizes every call to the collector.
type Authenticator struct {
	open    bool
	policy  Policy
	log     *slog.Logger
	refused func(Reason)
	now     func() time.Time

	cert     *fileCache[*tls.Certificate]
	clientCA *fileCache[*x509.CertPool]
	readers  *fileCache[*ReaderTokens]
	tokens   *TokenVerifier
}

// Open returns an Authenticator for a collector serving plaintext on
// loopback with no credentials configured: every caller is anonymous and
// may do anything.
func Open(log *slog.Logger) *Authenticator {
	return &Authenticator{open: true, log: log, now: time.Now}
}

// NewAuthenticator loads every credential file named in cfg and returns the
// Authenticator enforcing policy.
func NewAuthenticator(ctx context.Context, cfg ServerConfig, policy Policy) (*Authenticator, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{policy: policy, log: log, refused: cfg.Refused, now: cfg.Now}
	if a.now == nil {
		a.now = time.Now
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("a TLS certificate needs both its certificate and its key file")
	}
	if cfg.CertFile != "" {
		c, err := newFileCache(log, loadKeyPair, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate: %w", err)
		}
		a.cert = c
	}
	if cfg.ClientCAFile != "" {
		if a.cert == nil {
			return nil, errors.New("client certificates need TLS: give the serving certificate and key too")
		}
		c, err := newFileCache(log, func(b [][]byte) (*x509.CertPool, error) { return parseCertPool(b[0]) }, cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		a.clientCA = c
	}
	if cfg.ReaderTokensFile != "" {
		c, err := newFileCache(log, func(b [][]byte) (*ReaderTokens, error) {
			return ParseReaderTokens(bytes.NewReader(b[0]))
		}, cfg.ReaderTokensFile)
		if err != nil {
			return nil, fmt.Errorf("reader tokens %s: %w", cfg.ReaderTokensFile, err)
		}
		a.readers = c
	}
	if cfg.JWKS != "" || cfg.Issuer != "" {
		if cfg.JWKS == "" {
			return nil, errors.New("a token issuer needs its key set (JWKS file or URL) too")
		}
		keys, err := NewKeySet(ctx, JWKSConfig{Source: cfg.JWKS, CAFile: cfg.JWKSCAFile}, log)
		if err != nil {
			return nil, err
		}
		v, err := NewTokenVerifier(TokenConfig{Issuer: cfg.Issuer, Audience: cfg.Audience, ServiceAccounts: cfg.ServiceAccounts, Now: cfg.Now}, keys)
		if err != nil {
			return nil, err
		}
		a.tokens = v
		if len(cfg.ServiceAccounts) == 0 {
			log.Warn("any service account's token with the agent audience is accepted as its node's agent; name the agents' service accounts to narrow it")
		}
	}
	return a, nil
}

func loadKeyPair(b [][]byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(b[0], b[1])
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// TLSConfig is the server's TLS configuration, or nil when it serves
// plaintext. The certificate and the client CA are re-read when their files
// change. Client certificates are requested, not required, and verified per
// call, so tokens work over the same listener and a refused certificate is
// logged and counted.
func (a *Authenticator) TLSConfig() *tls.Config {
	if a.cert == nil {
		return nil
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return a.cert.get(), nil
		},
		NextProtos: []string{"h2"},
	}
	if a.clientCA != nil {
		c.ClientAuth = tls.RequestClientCert
	}
	return c
}

// ServerOptions are the grpc.ServerOptions that install TLS (when
// configured) and the interceptors.
func (a *Authenticator) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(a.Unary), grpc.ChainStreamInterceptor(a.Stream)}
	if tc := a.TLSConfig(); tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	return opts
}

// Unary is the unary server interceptor.
func (a *Authenticator) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor.
func (a *Authenticator) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

func (a *Authenticator) authorize(ctx context.Context, method string) (context.Context, error) {
	ctx = context.WithValue(ctx, authenticatorKey{}, a)
	if a.open {
		return WithIdentity(ctx, Identity{Kind: KindAnonymous, Via: "none"}), nil
	}
	rule, ok := a.policy.rule(method)
	if !ok {
		return nil, a.refuse(ctx, method, &Refusal{Reason: ReasonMethod, Detail: "no policy for " + method})
	}
	if rule.Public {
		return WithIdentity(ctx, Identity{Kind: KindAnonymous, Via: "none"}), nil
	}
	id, err := a.Authenticate(ctx)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			return nil, a.refuse(ctx, method, r)
		}
		return nil, err
	}
	ctx = WithIdentity(ctx, id)
	switch id.Kind {
	case KindAgent:
		if !rule.Agents {
			return nil, a.refuse(ctx, method, &Refusal{Reason: ReasonWrongKind, Detail: fmt.Sprintf("%s may not call %s", id, method)})
		}
	case KindReader:
		if len(rule.Roles) == 0 {
			return nil, a.refuse(ctx, method, &Refusal{Reason: ReasonWrongKind, Detail: fmt.Sprintf("%s may not call %s", id, method)})
		}
		if r := readerAllowed(id, rule.Roles); r != nil {
			return nil, a.refuse(ctx, method, r)
		}
	}
	return ctx, nil
}

// Authenticate finds the caller's one credential, a bearer token or a
// client certificate, and proves it.
func (a *Authenticator) Authenticate(ctx context.Context) (Identity, error) {
	token, hasToken, err := bearer(ctx)
	if err != nil {
		return Identity{}, err
	}
	var chain []*x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			chain = ti.State.PeerCertificates
		}
	}
	switch {
	case hasToken && len(chain) > 0:
		return Identity{}, &Refusal{Reason: ReasonTwoCredentials, Detail: "both a client certificate and a bearer token; present one"}
	case hasToken:
		return a.verifyToken(ctx, token)
	case len(chain) > 0:
		var roots *x509.CertPool
		if a.clientCA != nil {
			roots = a.clientCA.get()
		}
		leaf, err := verifyClientChain(chain, roots, a.now())
		if err != nil {
			return Identity{}, err
		}
		return CertIdentity(leaf)
	}
	return Identity{}, &Refusal{Reason: ReasonNoCredential, Detail: "no bearer token and no client certificate"}
}

func (a *Authenticator) verifyToken(ctx context.Context, token string) (Identity, error) {
	if a.readers != nil {
		if id, ok := a.readers.get().Lookup(token); ok {
			return id, nil
		}
	}
	if a.tokens != nil && LooksLikeJWT(token) {
		return a.tokens.Verify(ctx, token)
	}
	return Identity{}, &Refusal{Reason: ReasonUnknownToken, Detail: "bearer token matches no reader and is not a verifiable service-account token"}
}

// bearer returns the call's bearer token, if it sent one.
func bearer(ctx context.Context) (string, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, &Refusal{Reason: ReasonTwoCredentials, Detail: "more than one authorization header"}
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return "", false, &Refusal{Reason: ReasonMalformedToken, Detail: "authorization header is not \"Bearer TOKEN\""}
	}
	return strings.TrimSpace(tok), true, nil
}

// refuse logs and counts r and returns the status the call ends with. The
// log names the peer, the method and the reason, never the credential.
func (a *Authenticator) refuse(ctx context.Context, method string, r *Refusal) error {
	attrs := []any{"reason", string(r.Reason), "detail", r.Detail}
	if method == "" {
		if m, ok := grpc.Method(ctx); ok {
			method = m
		}
	}
	if method != "" {
		attrs = append(attrs, "method", method)
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	a.log.Warn("call refused", attrs...)
	if a.refused != nil {
		a.refused(r.Reason)
	}
	return r.status()
}
