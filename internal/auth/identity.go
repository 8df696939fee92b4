// Package auth is who may talk to the collector and as whom: TLS
// configuration with certificate files reloaded as they rotate, agent
// credentials (Kubernetes projected service-account tokens verified against
// the issuer's JWKS, or mTLS client certificates), reader credentials
// (bearer tokens from a file, or client certificates), the gRPC interceptors
// that turn them into an Identity, and the client side that presents them.
//
// Identities carried by client certificates are URI SANs:
//
//	nodeward://node/NAME     an agent that may report for node NAME only
//	nodeward://reader/NAME   a reader (query and tail)
//	nodeward://admin/NAME    a reader with the admin role
//
// A certificate must carry exactly one of them; DNS SANs and the subject are
// never read as identities, so a serving certificate from the same CA is not
// mistaken for an agent.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Kind says what sort of caller an Identity is.
type Kind string

// The kinds of caller.
const (
	// KindAnonymous is every caller of a collector serving open on
	// loopback with no credentials configured.
	KindAnonymous Kind = "anonymous"
	KindAgent     Kind = "agent"
	KindReader    Kind = "reader"
)

// Role is what a reader may do.
type Role string

// The reader roles.
const (
	RoleReader Role = "reader" // query and tail
	RoleAdmin  Role = "admin"  // everything a reader may, and administrative RPCs
)

// ParseRole checks a role's name.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleReader, RoleAdmin:
		return Role(s), nil
	}
	return "", fmt.Errorf("unknown role %q: want reader or admin", s)
}

// Identity is the authenticated caller of one RPC.
type Identity struct {
	Kind Kind
	// Node is the node an agent may report for; empty for readers.
	Node string
	// Name is who the credential names: the service account of a token,
	// the reader's name, or the certificate's nodeward URI.
	Name string
	// Role is a reader's role; empty for agents.
	Role Role
	// Via is how the caller proved it: "token", "certificate" or "none".
	Via string
}

// String is for logs.
func (id Identity) String() string {
	switch id.Kind {
	case KindAgent:
		return fmt.Sprintf("agent %s for node %s (%s)", id.Name, id.Node, id.Via)
	case KindReader:
		return fmt.Sprintf("%s %s (%s)", id.Role, id.Name, id.Via)
	}
	return string(id.Kind)
}

type identityKey struct{}
type authenticatorKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity the interceptors put in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// CheckNode is the collector's node authorizer: it refuses (PermissionDenied,
// logged and counted) unless the caller is an agent whose credential names
// node, or the collector runs open on loopback. A context without an
// identity is refused too, so a server wired without the interceptors fails
// closed.
func CheckNode(ctx context.Context, node string) error {
	id, ok := FromContext(ctx)
	a, _ := ctx.Value(authenticatorKey{}).(*Authenticator)
	if !ok || a == nil {
		return errNoIdentity
	}
	switch {
	case id.Kind == KindAnonymous:
		return nil
	case id.Kind != KindAgent:
		return a.refuse(ctx, "", &Refusal{Reason: ReasonWrongKind, Detail: fmt.Sprintf("%s may not report for a node", id)})
	case id.Node != node:
		return a.refuse(ctx, "", &Refusal{Reason: ReasonNodeMismatch,
			Detail: fmt.Sprintf("%s sent data for node %q", id, node)})
	}
	return nil
}

// CheckReader refuses unless the caller is a reader with one of roles (any
// role if none is given), or the collector runs open. The interceptors'
// policy already does this per method; this is for handlers that want to
// say so themselves.
func CheckReader(ctx context.Context, roles ...Role) error {
	id, ok := FromContext(ctx)
	a, _ := ctx.Value(authenticatorKey{}).(*Authenticator)
	if !ok || a == nil {
		return errNoIdentity
	}
	if id.Kind == KindAnonymous {
		return nil
	}
	if r := readerAllowed(id, roles); r != nil {
		return a.refuse(ctx, "", r)
	}
	return nil
}

func readerAllowed(id Identity, roles []Role) *Refusal {
	if id.Kind != KindReader {
		return &Refusal{Reason: ReasonWrongKind, Detail: fmt.Sprintf("%s may not use reader RPCs", id)}
	}
	if len(roles) == 0 {
		return nil
	}
	for _, r := range roles {
		if id.Role == r {
			return nil
		}
	}
	return &Refusal{Reason: ReasonRole, Detail: fmt.Sprintf("%s lacks role %s", id, joinRoles(roles))}
}

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
}

var errNoIdentity = permissionDenied("no caller identity: the server runs without the auth interceptors")

// ValidName checks a node or reader name from a credential: a DNS-1123
// subdomain, as Kubernetes node names are.
func ValidName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 253 {
		return errors.New("name longer than 253 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return fmt.Errorf("name %q: only lower-case letters, digits, '-' and '.' are allowed", name)
		}
	}
	return nil
}
