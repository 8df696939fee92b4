package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/nodeward/nodeward/internal/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
)

// serveAuth holds serve's TLS and credential flags.
type serveAuth struct {
	cfg auth.ServerConfig
}

func (a *serveAuth) add(f *pflag.FlagSet) {
	f.StringVar(&a.cfg.CertFile, "tls-cert", "", "serving certificate (PEM); re-read when the file changes")
	f.StringVar(&a.cfg.KeyFile, "tls-key", "", "serving certificate's private key (PEM)")
	f.StringVar(&a.cfg.ClientCAFile, "client-ca", "", "CA of client certificates: agents (URI SAN nodeward://node/NAME) and readers (nodeward://reader/NAME, nodeward://admin/NAME)")
	f.StringVar(&a.cfg.JWKS, "token-jwks", "", "agents' token issuer keys: a JWKS file or https:// URL")
	f.StringVar(&a.cfg.JWKSCAFile, "token-jwks-ca", "", "CA of the --token-jwks URL's server (default: system roots)")
	f.StringVar(&a.cfg.Issuer, "token-issuer", "", "the service-account token issuer (iss), e.g. https://oidc.eks.REGION.amazonaws.com/id/ID")
	f.StringVar(&a.cfg.Audience, "token-audience", "nodeward", "audience agents' tokens must carry")
	f.StringSliceVar(&a.cfg.ServiceAccounts, "token-service-account", nil, "NAMESPACE/NAME of the agents' service account (repeatable; default any)")
	f.StringVar(&a.cfg.ReaderTokensFile, "reader-tokens", "", "reader bearer tokens: lines of token,name,role (role reader or admin); re-read when it changes")
}

// collectorPolicy: agents stream, readers query and tail, anyone checks
// health (kubelet probes), readers may use reflection.
var collectorPolicy = auth.Policy{
	"/nodeward.v1.AgentService/":                 {Agents: true},
	"/nodeward.v1.QueryService/":                 {Roles: []auth.Role{auth.RoleReader, auth.RoleAdmin}},
	"/grpc.health.v1.Health/":                    {Public: true},
	"/grpc.reflection.v1.ServerReflection/":      {Roles: []auth.Role{auth.RoleReader, auth.RoleAdmin}},
	"/grpc.reflection.v1alpha.ServerReflection/": {Roles: []auth.Role{auth.RoleReader, auth.RoleAdmin}},
}

// checkListen refuses plaintext off loopback, before anything is opened.
func (a *serveAuth) checkListen(listen string) error {
	if a.cfg.CertFile == "" && !auth.IsLoopback(listen) {
		return fmt.Errorf("--listen %s is not a loopback address: refusing to serve without TLS (give --tls-cert and --tls-key, and --client-ca and/or --token-jwks for agents)", listen)
	}
	return nil
}

// authenticator decides how serve authenticates: open and plaintext on
// loopback when no credential flag is given, and never plaintext off
// loopback.
func (a *serveAuth) authenticator(ctx context.Context, listen string, log *slog.Logger, reg prometheus.Registerer) (*auth.Authenticator, error) {
	if err := a.checkListen(listen); err != nil {
		return nil, err
	}
	if !a.cfg.Configured() {
		log.Warn("serving plaintext on loopback with no authentication: every caller may report and query")
		return auth.Open(log), nil
	}
	refused, err := auth.RefusalCounter(reg)
	if err != nil {
		return nil, fmt.Errorf("auth metrics: %w", err)
	}
	cfg := a.cfg
	cfg.Log, cfg.Refused = log, refused
	authn, err := auth.NewAuthenticator(ctx, cfg, collectorPolicy)
	if err != nil {
		return nil, err
	}
	if cfg.ClientCAFile == "" && cfg.JWKS == "" {
		log.Warn("no agent credential configured (--client-ca or --token-jwks): every agent will be refused")
	}
	if cfg.ClientCAFile == "" && cfg.ReaderTokensFile == "" {
		log.Warn("no reader credential configured (--client-ca or --reader-tokens): every query will be refused")
	}
	return authn, nil
}

// clientAuth holds the client verbs' TLS and credential flags.
type clientAuth struct {
	cfg auth.ClientConfig
}

func (a *clientAuth) add(f *pflag.FlagSet) {
	f.StringVar(&a.cfg.CAFile, "tls-ca", "", "CA of the collector's certificate; TLS is used with it, or whenever --server is not loopback")
	f.StringVar(&a.cfg.CertFile, "tls-cert", "", "client certificate (a reader's: URI SAN nodeward://reader/NAME)")
	f.StringVar(&a.cfg.KeyFile, "tls-key", "", "client certificate's private key")
	f.StringVar(&a.cfg.TokenFile, "token-file", os.Getenv("NODEWARD_TOKEN_FILE"), "file holding a reader bearer token (env NODEWARD_TOKEN_FILE)")
}

func (a *clientAuth) dialOptions(server string) ([]grpc.DialOption, error) {
	cfg := a.cfg
	cfg.Server = server
	return auth.DialOptions(cfg)
}
