package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/auth/authtest"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// policy is the collector's: agents stream, readers query, anyone checks
// health.
var policy = Policy{
	"/nodeward.v1.AgentService/": {Agents: true},
	"/nodeward.v1.QueryService/": {Roles: []Role{RoleReader, RoleAdmin}},
	"/grpc.health.v1.Health/":    {Public: true},
}

// agentSvc authorizes the Hello's node and answers with a Welcome.
type agentSvc struct {
	nodewardv1.UnimplementedAgentServiceServer
}

func (agentSvc) Connect(stream nodewardv1.AgentService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := CheckNode(stream.Context(), first.GetHello().GetNodeName()); err != nil {
		return err
	}
	return stream.Send(&nodewardv1.ConnectResponse{Payload: &nodewardv1.ConnectResponse_Welcome{Welcome: &nodewardv1.Welcome{}}})
}

type querySvc struct {
	nodewardv1.UnimplementedQueryServiceServer
}

func (querySvc) ListNodes(ctx context.Context, _ *nodewardv1.ListNodesRequest) (*nodewardv1.ListNodesResponse, error) {
	if err := CheckReader(ctx); err != nil {
		return nil, err
	}
	id, _ := FromContext(ctx)
	return &nodewardv1.ListNodesResponse{NextPageToken: id.Name}, nil
}

func (querySvc) TailEvents(_ *nodewardv1.TailEventsRequest, stream nodewardv1.QueryService_TailEventsServer) error {
	return stream.Send(&nodewardv1.TailEventsResponse{})
}

type counter struct {
	mu sync.Mutex
	n  map[Reason]int
}

func (c *counter) inc(r Reason) { c.mu.Lock(); c.n[r]++; c.mu.Unlock() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type testPKI struct {
	dir                             string
	ca, serverCert, serverKey, jwks string
	readers                         string
	signer                          *authtest.Signer
	caPEM                           []byte
	authority                       *authtest.CA
	readerToken, adminToken         string
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.authority = authtest.NewCA(t, "nodeward CA")
	p.caPEM = p.authority.CertPEM
	p.ca = filepath.Join(p.dir, "ca.crt")
	authtest.WriteFile(t, p.ca, p.caPEM)
	p.serverCert, p.serverKey = p.authority.Issue(t, authtest.Leaf{CommonName: "collector", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}).Write(t, p.dir, "server")
	p.signer = authtest.NewRSASigner(t, "sa-key-1")
	ec := authtest.NewECSigner(t, "sa-key-2")
	p.jwks = filepath.Join(p.dir, "jwks.json")
	authtest.WriteFile(t, p.jwks, authtest.JWKS(t, p.signer, ec))
	p.readerToken, p.adminToken = "r-4f1c0e9a7b2d44c1a9f3", "a-9d8c7b6a5f4e3d2c1b0a"
	p.readers = filepath.Join(p.dir, "readers.csv")
	authtest.WriteFile(t, p.readers, []byte("# reader tokens\n"+p.readerToken+",alice,reader\n"+p.adminToken+",bob,admin\n"))
	return p
}

func (p *testPKI) file(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	authtest.WriteFile(t, path, b)
	return path
}

func startServer(t *testing.T, p *testPKI, refused func(Reason), log *slog.Logger) string {
	t.Helper()
	a, err := NewAuthenticator(context.Background(), ServerConfig{
		CertFile: p.serverCert, KeyFile: p.serverKey, ClientCAFile: p.ca,
		JWKS: p.jwks, Issuer: testIssuer, ServiceAccounts: []string{"nodeward/agent"},
		ReaderTokensFile: p.readers, Log: log, Refused: refused,
	}, policy)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(a.ServerOptions()...)
	nodewardv1.RegisterAgentServiceServer(srv, agentSvc{})
	nodewardv1.RegisterQueryServiceServer(srv, querySvc{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func dial(t *testing.T, cfg ClientConfig) *grpc.ClientConn {
	t.Helper()
	opts, err := DialOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(cfg.Server, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func connect(ctx context.Context, conn *grpc.ClientConn, node string) error {
	stream, err := nodewardv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Hello{Hello: &nodewardv1.Hello{NodeName: node}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if resp.GetWelcome() == nil {
		return errors.New("no welcome")
	}
	return nil
}

func listNodes(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	resp, err := nodewardv1.NewQueryServiceClient(conn).ListNodes(ctx, &nodewardv1.ListNodesRequest{})
	return resp.GetNextPageToken(), err
}

func tail(ctx context.Context, conn *grpc.ClientConn) error {
	s, err := nodewardv1.NewQueryServiceClient(conn).TailEvents(ctx, &nodewardv1.TailEventsRequest{})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

// TestInterceptorsOverTLS runs the interceptors in a real gRPC server on
// loopback TLS and tries every credential against agent and reader RPCs.
func TestInterceptorsOverTLS(t *testing.T) {
	p := newPKI(t)
	cnt := &counter{n: map[Reason]int{}}
	logs := &syncBuffer{}
	addr := startServer(t, p, cnt.inc, slog.New(slog.NewJSONHandler(logs, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	now := time.Now()
	claims := func(node string, f func(*authtest.Claims)) authtest.Claims {
		c := authtest.AgentClaims(testIssuer, node)
		if f != nil {
			f(&c)
		}
		return c
	}
	tokens := map[string]string{
		"agent-a":        p.signer.Token(t, claims("node-a", nil)),
		"expired":        p.signer.Token(t, claims("node-a", func(c *authtest.Claims) { c.IssuedAt, c.Expiry = now.Add(-3*time.Hour), now.Add(-2*time.Hour) })),
		"wrong-audience": p.signer.Token(t, claims("node-a", func(c *authtest.Claims) { c.Audience = []string{"https://kubernetes.default.svc"} })),
		"reader":         p.readerToken,
		"admin":          p.adminToken,
		"unknown":        "not-a-reader-token-at-all",
	}
	tokenFile := func(name string) string { return p.file(t, "token-"+name, []byte(tokens[name]+"\n")) }
	otherCA := authtest.NewCA(t, "another CA")
	certs := map[string][2]string{}
	issue := func(name string, ca *authtest.CA, uri string) {
		c, k := ca.Issue(t, authtest.Leaf{CommonName: name, URIs: []string{uri}, Client: true}).Write(t, p.dir, name)
		certs[name] = [2]string{c, k}
	}
	issue("cert-agent-a", p.authority, "nodeward://node/node-a")
	issue("cert-reader", p.authority, "nodeward://reader/carol")
	issue("cert-other-ca", otherCA, "nodeward://node/node-a")
	issue("cert-no-identity", p.authority, "spiffe://cluster.local/ns/default/sa/x")

	client := func(token, cert string) *grpc.ClientConn {
		cfg := ClientConfig{Server: addr, CAFile: p.ca}
		if token != "" {
			cfg.TokenFile = tokenFile(token)
		}
		if cert != "" {
			cfg.CertFile, cfg.KeyFile = certs[cert][0], certs[cert][1]
		}
		return dial(t, cfg)
	}

	type call func(context.Context, *grpc.ClientConn) error
	connectAs := func(node string) call {
		return func(ctx context.Context, c *grpc.ClientConn) error { return connect(ctx, c, node) }
	}
	query := func(ctx context.Context, c *grpc.ClientConn) error { _, err := listNodes(ctx, c); return err }
	healthCheck := func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	want := map[Reason]int{}
	for _, tc := range []struct {
		name, token, cert string
		call              call
		code              codes.Code
		reason            Reason
	}{
		{"agent without credential", "", "", connectAs("node-a"), codes.Unauthenticated, ReasonNoCredential},
		{"expired token", "expired", "", connectAs("node-a"), codes.Unauthenticated, ReasonTokenExpired},
		{"wrong-audience token", "wrong-audience", "", connectAs("node-a"), codes.Unauthenticated, ReasonWrongAudience},
		{"certificate from another CA", "", "cert-other-ca", connectAs("node-a"), codes.Unauthenticated, ReasonUntrustedCert},
		{"certificate without identity", "", "cert-no-identity", connectAs("node-a"), codes.Unauthenticated, ReasonCertNoIdentity},
		{"token agent for its node", "agent-a", "", connectAs("node-a"), codes.OK, ""},
		{"token agent for another node", "agent-a", "", connectAs("node-b"), codes.PermissionDenied, ReasonNodeMismatch},
		{"certificate agent for its node", "", "cert-agent-a", connectAs("node-a"), codes.OK, ""},
		{"certificate agent for another node", "", "cert-agent-a", connectAs("node-b"), codes.PermissionDenied, ReasonNodeMismatch},
		{"token agent queries", "agent-a", "", query, codes.PermissionDenied, ReasonWrongKind},
		{"certificate agent tails", "", "cert-agent-a", tail, codes.PermissionDenied, ReasonWrongKind},
		{"reader queries", "reader", "", query, codes.OK, ""},
		{"reader tails", "reader", "", tail, codes.OK, ""},
		{"admin queries", "admin", "", query, codes.OK, ""},
		{"certificate reader queries", "", "cert-reader", query, codes.OK, ""},
		{"reader streams as an agent", "reader", "", connectAs("node-a"), codes.PermissionDenied, ReasonWrongKind},
		{"unknown bearer token", "unknown", "", query, codes.Unauthenticated, ReasonUnknownToken},
		{"two credentials", "reader", "cert-agent-a", query, codes.Unauthenticated, ReasonTwoCredentials},
		{"health without credential", "", "", healthCheck, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx, client(tc.token, tc.cert))
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %s (%v), want %s", got, err, tc.code)
			}
			if tc.reason != "" {
				want[tc.reason]++
				if !strings.HasPrefix(status.Convert(err).Message(), string(tc.reason)+":") {
					t.Errorf("message %q does not give reason %s", status.Convert(err).Message(), tc.reason)
				}
			}
		})
	}
	cnt.mu.Lock()
	defer cnt.mu.Unlock()
	for r, n := range want {
		if cnt.n[r] != n {
			t.Errorf("%s counted %d times, want %d", r, cnt.n[r], n)
		}
	}
	for r, n := range cnt.n {
		if want[r] == 0 {
			t.Errorf("%s counted %d times, want 0", r, n)
		}
	}
	out := logs.String()
	if got, wantN := strings.Count(out, `"msg":"call refused"`), sum(want); got != wantN {
		t.Errorf("%d refusals logged, want %d", got, wantN)
	}
	for name, tok := range tokens {
		if strings.Contains(out, tok) || strings.Contains(out, tok[len(tok)-8:]) {
			t.Errorf("log carries (part of) the %s token", name)
		}
	}
}

func sum(m map[Reason]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestCredentialFilesRotate rotates the server certificate and the agent's
// token file under running processes: the next handshake serves the new
// certificate, the next call sends the new token.
func TestCredentialFilesRotate(t *testing.T) {
	p := newPKI(t)
	addr := startServer(t, p, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	served := func() string {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(p.caPEM)
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()
	kp := p.authority.Issue(t, authtest.Leaf{CommonName: "collector", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	kp.Write(t, p.dir, "server")
	deadline := time.Now().Add(5 * time.Second)
	want := parseLeaf(t, kp.CertPEM).SerialNumber.String()
	for served() != want {
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial %s after rotation to %s", before, want)
		}
		time.Sleep(200 * time.Millisecond)
	}

	tokPath := p.file(t, "token", []byte(p.signer.Token(t, authtest.AgentClaims(testIssuer, "node-a"))))
	conn := dial(t, ClientConfig{Server: addr, CAFile: p.ca, TokenFile: tokPath})
	if err := connect(ctx, conn, "node-a"); err != nil {
		t.Fatalf("first token: %v", err)
	}
	if err := connect(ctx, conn, "node-b"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("node-a token for node-b: %v", err)
	}
	// The kubelet rewrites the file; the same connection sends the new one.
	p.file(t, "token", []byte(p.signer.Token(t, authtest.AgentClaims(testIssuer, "node-b"))))
	if err := connect(ctx, conn, "node-b"); err != nil {
		t.Fatalf("rotated token: %v", err)
	}
}

// TestOpenOnLoopback: with no credential configured every caller is
// anonymous and may do anything, and the node check passes.
func TestOpenOnLoopback(t *testing.T) {
	a := Open(slog.New(slog.DiscardHandler))
	srv := grpc.NewServer(a.ServerOptions()...)
	nodewardv1.RegisterAgentServiceServer(srv, agentSvc{})
	nodewardv1.RegisterQueryServiceServer(srv, querySvc{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn := dial(t, ClientConfig{Server: lis.Addr().String()})
	ctx := context.Background()
	if err := connect(ctx, conn, "any-node"); err != nil {
		t.Fatal(err)
	}
	if _, err := listNodes(ctx, conn); err != nil {
		t.Fatal(err)
	}
	// Without the interceptors, handlers fail closed.
	if err := CheckNode(ctx, "any-node"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CheckNode without identity: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	p := newPKI(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"cert without key", ServerConfig{CertFile: p.serverCert}, "both its certificate and its key"},
		{"client CA without TLS", ServerConfig{ClientCAFile: p.ca}, "client certificates need TLS"},
		{"issuer without JWKS", ServerConfig{Issuer: testIssuer}, "key set"},
		{"JWKS without issuer", ServerConfig{JWKS: p.jwks}, "issuer is required"},
		{"bad service account", ServerConfig{JWKS: p.jwks, Issuer: testIssuer, ServiceAccounts: []string{"agent"}}, "NAMESPACE/NAME"},
		{"missing reader file", ServerConfig{ReaderTokensFile: filepath.Join(p.dir, "nope")}, "no such file"},
		{"key does not match", ServerConfig{CertFile: p.serverCert, KeyFile: p.file(t, "k", p.authority.Issue(t, authtest.Leaf{}).KeyPEM)}, "private key does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewAuthenticator(ctx, tc.cfg, policy)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := DialOptions(ClientConfig{Server: "10.1.2.3:7420", TokenFile: filepath.Join(p.dir, "nope")}); err == nil {
		t.Error("a missing token file was accepted")
	}
}

func parseLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReaderTokenOnPlainLoopback: reader tokens alone, without TLS, on
// loopback: the token may travel in plaintext there, and is enforced.
func TestReaderTokenOnPlainLoopback(t *testing.T) {
	p := newPKI(t)
	cnt := &counter{n: map[Reason]int{}}
	a, err := NewAuthenticator(context.Background(), ServerConfig{ReaderTokensFile: p.readers, Refused: cnt.inc}, policy)
	if err != nil {
		t.Fatal(err)
	}
	if a.TLSConfig() != nil {
		t.Fatal("TLS without a certificate")
	}
	srv := grpc.NewServer(a.ServerOptions()...)
	nodewardv1.RegisterQueryServiceServer(srv, querySvc{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	ctx := context.Background()
	tok := p.file(t, "reader.token", []byte(p.readerToken+"\n"))
	name, err := listNodes(ctx, dial(t, ClientConfig{Server: lis.Addr().String(), TokenFile: tok}))
	if err != nil || name != "alice" {
		t.Fatalf("reader token: %q, %v", name, err)
	}
	if _, err := listNodes(ctx, dial(t, ClientConfig{Server: lis.Addr().String()})); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	if cnt.n[ReasonNoCredential] != 1 {
		t.Errorf("no_credential counted %d times, want 1", cnt.n[ReasonNoCredential])
	}
}
