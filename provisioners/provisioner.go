// Package provisioners defines how agentca learns who a caller is.
//
// A Provisioner verifies one kind of attestation (a join token, a
// Kubernetes service-account token, a cloud instance document) and returns
// the facts it established as an Identity. It never signs anything and
// never decides lifetimes; the CA does that with the facts. Each kind is
// a subpackage; the daemon lists the built-in kinds explicitly.
package provisioners

import (
	"context"
	"errors"
)

// ErrUnauthorized is returned when an attestation is not accepted. The
// wrapped detail is for the audit log only; callers see one generic
// message so that a refusal is no oracle.
var ErrUnauthorized = errors.New("provisioners: attestation not accepted")

// Identity is what a provisioner established about the caller.
type Identity struct {
	// SPIFFEID the caller may hold.
	SPIFFEID string
	// DNSNames the caller may hold beside its SPIFFE ID, if the
	// provisioner's policy allows any.
	DNSNames []string
	// JoinToken is the SHA-256 of the join token to consume when the
	// certificate is recorded.
	JoinToken []byte
	// Once are replay keys to record with the certificate (jti, instance
	// ID); issuance fails if one was used before.
	Once []string
	// Claims are the attested facts, for templates, policy and audit.
	Claims map[string]string
}

// Provisioner verifies an attestation. token is the request's "token"
// field, whose format depends on the kind.
type Provisioner interface {
	Attest(ctx context.Context, token string) (*Identity, error)
}
