package auth

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reason is why a call was refused; it is a metric label, so the set is
// small and fixed.
type Reason string

// The refusal reasons.
const (
	ReasonNoCredential      Reason = "no_credential"
	ReasonTwoCredentials    Reason = "two_credentials"
	ReasonUnknownToken      Reason = "unknown_token"
	ReasonMalformedToken    Reason = "malformed_token"
	ReasonBadSignature      Reason = "bad_signature"
	ReasonTokenExpired      Reason = "token_expired"
	ReasonTokenNotYetValid  Reason = "token_not_yet_valid"
	ReasonTokenNotShortLive Reason = "token_not_short_lived"
	ReasonWrongAudience     Reason = "wrong_audience"
	ReasonWrongIssuer       Reason = "wrong_issuer"
	ReasonServiceAccount    Reason = "service_account_not_allowed"
	ReasonNoNodeClaim       Reason = "token_without_node"
	ReasonUntrustedCert     Reason = "untrusted_certificate"
	ReasonCertNoIdentity    Reason = "certificate_without_identity"
	ReasonWrongKind         Reason = "wrong_kind"
	ReasonRole              Reason = "role_not_allowed"
	ReasonNodeMismatch      Reason = "node_mismatch"
	ReasonMethod            Reason = "method_not_allowed"
	ReasonVerifierDown      Reason = "verifier_unavailable"
)

// Reasons lists every reason, so a counter can be set to zero for each at
// start and a dashboard sees the series before the first refusal.
var Reasons = []Reason{
	ReasonNoCredential, ReasonTwoCredentials, ReasonUnknownToken, ReasonMalformedToken, ReasonBadSignature,
	ReasonTokenExpired, ReasonTokenNotYetValid, ReasonTokenNotShortLive, ReasonWrongAudience, ReasonWrongIssuer,
	ReasonServiceAccount, ReasonNoNodeClaim, ReasonUntrustedCert, ReasonCertNoIdentity, ReasonWrongKind, ReasonRole,
	ReasonNodeMismatch, ReasonMethod, ReasonVerifierDown,
}

// Refusal is a refused credential or call. Detail is for the log and the
// caller and never holds any part of a secret.
type Refusal struct {
	Reason Reason
	Detail string
}

func (r *Refusal) Error() string { return string(r.Reason) + ": " + r.Detail }

// code is the gRPC status a refusal ends the call with: a credential that
// proves nothing is Unauthenticated, a proven caller doing what it may not is
// PermissionDenied.
func (r *Refusal) code() codes.Code {
	switch r.Reason {
	case ReasonWrongKind, ReasonRole, ReasonNodeMismatch, ReasonMethod:
		return codes.PermissionDenied
	case ReasonVerifierDown:
		return codes.Unavailable
	}
	return codes.Unauthenticated
}

func (r *Refusal) status() error { return status.Error(r.code(), r.Error()) }

func permissionDenied(msg string) error { return status.Error(codes.PermissionDenied, msg) }
