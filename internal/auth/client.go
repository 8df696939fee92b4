package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ClientConfig is what a client (agent or CLI) presents to the collector.
type ClientConfig struct {
	Server    string // HOST:PORT
	CAFile    string // CA of the collector's certificate (default: system roots)
	CertFile  string // client certificate (agent or reader), optional
	KeyFile   string
	TokenFile string // bearer token file, re-read for every call
	Log       *slog.Logger
}

// UsesTLS says whether the client speaks TLS: always off loopback, and on
// loopback whenever a CA or client certificate is given.
func (c *ClientConfig) UsesTLS() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || !IsLoopback(c.Server)
}

// DialOptions are the grpc.DialOptions for cfg: transport credentials and,
// with a token file, per-RPC credentials.
func DialOptions(cfg ClientConfig) ([]grpc.DialOption, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var opts []grpc.DialOption
	useTLS := cfg.UsesTLS()
	if useTLS {
		tc, err := clientTLS(cfg, log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cfg.TokenFile != "" {
		if _, err := readToken(cfg.TokenFile); err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithPerRPCCredentials(&TokenFile{Path: cfg.TokenFile, Insecure: !useTLS}))
	}
	return opts, nil
}

func clientTLS(cfg ClientConfig, log *slog.Logger) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		b, err := readBounded(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("collector CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("collector CA %s: no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	if cfg.CertFile != "" {
		c, err := newFileCache(log, loadKeyPair, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		// Read on every handshake, so a rotated certificate is used on the
		// next reconnect without a restart.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.get(), nil
		}
	}
	return tc, nil
}

// TokenFile is per-RPC credentials that read a bearer token from a file on
// every call, so the token the kubelet rotates in a projected volume is
// always the current one.
type TokenFile struct {
	Path string
	// Insecure allows sending the token without TLS; only for loopback.
	Insecure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t *TokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := readToken(t.Path)
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (t *TokenFile) RequireTransportSecurity() bool { return !t.Insecure }

func readToken(path string) (string, error) {
	b, err := readBounded(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s: empty", path)
	}
	if strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("token file %s: more than one line", path)
	}
	return tok, nil
}
