// Package authtest makes real credentials for tests: a certificate
// authority issuing server and client certificates, and a token issuer
// signing Kubernetes-shaped service-account tokens with RSA or EC keys.
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// CA is a certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// NewCA makes a self-signed EC P-256 CA.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	URIs       []string
	DNSNames   []string
	IPs        []net.IP
	Server     bool // server auth usage
	Client     bool // client auth usage
	RSA        bool // RSA 2048 key instead of EC P-256
	NotAfter   time.Time
}

// KeyPair is an issued certificate and its key, PEM-encoded.
type KeyPair struct {
	CertPEM, KeyPEM []byte
}

// Issue signs a leaf certificate.
func (ca *CA) Issue(t testing.TB, l Leaf) KeyPair {
	t.Helper()
	var key crypto.Signer
	var err error
	if l.RSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(12 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     l.NotAfter,
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, s := range l.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return KeyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
}

// Write stores the pair as DIR/NAME.crt and DIR/NAME.key and returns both
// paths.
func (kp KeyPair) Write(t testing.TB, dir, name string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	WriteFile(t, cert, kp.CertPEM)
	WriteFile(t, key, kp.KeyPEM)
	return cert, key
}

// WriteFile writes b to path with mode 0600, failing the test on error.
func WriteFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Signer is one key of a token issuer.
type Signer struct {
	KID string
	Alg jose.SignatureAlgorithm
	key crypto.Signer
}

// NewRSASigner makes an RS256 key.
func NewRSASigner(t testing.TB, kid string) *Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{KID: kid, Alg: jose.RS256, key: k}
}

// NewECSigner makes an ES256 key.
func NewECSigner(t testing.TB, kid string) *Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{KID: kid, Alg: jose.ES256, key: k}
}

// JWKS is the public key set of signers, as an issuer publishes it.
func JWKS(t testing.TB, signers ...*Signer) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, s := range signers {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: s.key.Public(), KeyID: s.KID, Algorithm: string(s.Alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Claims are the claims of a projected service-account token.
type Claims struct {
	Issuer         string
	Audience       []string
	Namespace      string
	ServiceAccount string
	Node           string // empty: no node claim
	IssuedAt       time.Time
	Expiry         time.Time // zero: no exp claim
}

// AgentClaims are valid claims for an agent on node, for an hour.
func AgentClaims(issuer, node string) Claims {
	now := time.Now()
	return Claims{Issuer: issuer, Audience: []string{"nodeward"}, Namespace: "nodeward", ServiceAccount: "agent",
		Node: node, IssuedAt: now.Add(-time.Minute), Expiry: now.Add(time.Hour)}
}

// Token signs c the way the Kubernetes token issuer lays it out.
func (s *Signer) Token(t testing.TB, c Claims) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: s.Alg, Key: s.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.KID))
	if err != nil {
		t.Fatal(err)
	}
	std := jwt.Claims{
		Issuer:    c.Issuer,
		Subject:   "system:serviceaccount:" + c.Namespace + ":" + c.ServiceAccount,
		Audience:  jwt.Audience(c.Audience),
		IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
		NotBefore: jwt.NewNumericDate(c.IssuedAt),
	}
	if !c.Expiry.IsZero() {
		std.Expiry = jwt.NewNumericDate(c.Expiry)
	}
	kube := map[string]any{
		"namespace":      c.Namespace,
		"serviceaccount": map[string]string{"name": c.ServiceAccount, "uid": "0b7c6d9e-sa"},
		"pod":            map[string]string{"name": "agent-x1", "uid": "1c8d7e0f-pod"},
	}
	if c.Node != "" {
		kube["node"] = map[string]string{"name": c.Node, "uid": "2d9e8f1a-node"}
	}
	raw, err := jwt.Signed(sig).Claims(std).Claims(map[string]any{"kubernetes.io": kube}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
