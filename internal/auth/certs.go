package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The URI SAN scheme that carries nodeward identities.
const uriScheme = "nodeward"

// CertIdentity reads the nodeward identity of a verified client
// certificate: exactly one nodeward:// URI SAN.
func CertIdentity(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme {
			continue
		}
		name := strings.TrimPrefix(u.Path, "/")
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" || strings.Contains(name, "/") {
			return Identity{}, &Refusal{Reason: ReasonCertNoIdentity, Detail: fmt.Sprintf("malformed identity URI %q", u)}
		}
		if err := ValidName(name); err != nil {
			return Identity{}, &Refusal{Reason: ReasonCertNoIdentity, Detail: fmt.Sprintf("identity URI %q: %v", u, err)}
		}
		id := Identity{Name: u.String(), Via: "certificate"}
		switch u.Host {
		case "node":
			id.Kind, id.Node = KindAgent, name
		case "reader":
			id.Kind, id.Role = KindReader, RoleReader
		case "admin":
			id.Kind, id.Role = KindReader, RoleAdmin
		default:
			return Identity{}, &Refusal{Reason: ReasonCertNoIdentity, Detail: fmt.Sprintf("identity URI %q: want nodeward://node/, reader/ or admin/", u)}
		}
		if id.Kind == KindReader {
			id.Name = name
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, &Refusal{Reason: ReasonCertNoIdentity, Detail: fmt.Sprintf("certificate %q carries no nodeward:// URI SAN", cert.Subject.CommonName)}
	case 1:
		return found[0], nil
	}
	return Identity{}, &Refusal{Reason: ReasonCertNoIdentity, Detail: fmt.Sprintf("certificate %q carries %d nodeward identities, want one", cert.Subject.CommonName, len(found))}
}

// verifyClientChain checks a client's certificate chain against the client
// CA pool. The TLS handshake only requests the certificate, so that a
// certificate from another CA reaches this point and is refused, logged and
// counted like every other credential, instead of failing the handshake
// unseen.
func verifyClientChain(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate")
	}
	if roots == nil {
		return nil, &Refusal{Reason: ReasonUntrustedCert, Detail: "client certificates are not accepted: no client CA configured"}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, &Refusal{Reason: ReasonUntrustedCert, Detail: fmt.Sprintf("certificate %q (issuer %q): %v", leaf.Subject.CommonName, leaf.Issuer.CommonName, err)}
	}
	return leaf, nil
}

func parseCertPool(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("no PEM certificate")
	}
	return pool, nil
}
