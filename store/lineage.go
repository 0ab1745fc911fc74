package store

// Retries and lineage: the checks every backend makes for a renewal inside
// its issuing transaction, the walk of a certificate's lineage that a
// revocation follows, and how an issuance that was already made is found
// for a retry. The backends differ in how they read and write; the rules
// are here, once.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors of renewals and retries, matched with errors.Is.
var (
	// ErrRevoked: the certificate being renewed is revoked (checked in
	// the issuing transaction, so a renewal racing a revocation is
	// either recorded before it, and revoked with it, or refused).
	ErrRevoked = errors.New("store: the certificate renewed is revoked")
	// ErrRenewalReused: the certificate being renewed was already renewed
	// onto another key. Issue then revokes the whole lineage
	// (RenewalReusedError).
	ErrRenewalReused = errors.New("store: the certificate was already renewed onto another key")
	// ErrAlreadyIssued: the attestation (a join token, replay keys, a
	// renewal's parent) was already exchanged for a certificate for the
	// same public key; AlreadyIssuedError carries it.
	ErrAlreadyIssued = errors.New("store: a certificate was already issued for this attestation and key")
)

// KeyCompromise is the RFC 5280 CRLReason code of a lineage revoked for a
// reused renewal.
const KeyCompromise = 1

// AlreadyIssuedError is Issue's answer to a retry: the certificate the
// same attestation and public key already obtained. It wraps
// ErrAlreadyIssued.
type AlreadyIssuedError struct{ Certificate Certificate }

func (e *AlreadyIssuedError) Error() string {
	return fmt.Sprintf("%v: serial %s", ErrAlreadyIssued, e.Certificate.Serial)
}
func (e *AlreadyIssuedError) Unwrap() error { return ErrAlreadyIssued }

// RenewalReusedError is Issue's answer to a second renewal of one
// certificate onto another key: the lineage was revoked (keyCompromise).
// Revoked lists the records revoked by it (already revoked ones are not
// listed). It wraps ErrRenewalReused, and the revocation's error when the
// lineage could not be revoked.
type RenewalReusedError struct {
	Parent  string
	Revoked []Certificate
	Err     error
}

func (e *RenewalReusedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%v (serial %s); revoking its lineage failed: %v", ErrRenewalReused, e.Parent, e.Err)
	}
	return fmt.Sprintf("%v (serial %s); %d certificates of its lineage revoked", ErrRenewalReused, e.Parent, len(e.Revoked))
}
func (e *RenewalReusedError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrRenewalReused, e.Err}
	}
	return []error{ErrRenewalReused}
}

// Renewal is the record of a certificate's one renewal: the child's
// serial and its public key (Certificate.PublicKeySHA256).
type Renewal struct {
	Child string `json:"child"`
	Key   string `json:"key"`
}

// PublicKeySHA256 is the lowercase hex SHA-256 of a DER
// SubjectPublicKeyInfo: what Certificate.PublicKeySHA256 holds.
func PublicKeySHA256(spki []byte) string {
	h := sha256.Sum256(spki)
	return hex.EncodeToString(h[:])
}

// LineageReader reads what the renewal checks and the lineage walk need,
// inside a backend's transaction. Each returns nil and no error for a
// record that does not exist.
type LineageReader interface {
	Cert(serial string) (*Certificate, error)
	Renewal(parent string) (*Renewal, error)
}

// errExisting is CheckRenewal's refusal of a retried renewal: the parent
// was already renewed onto the same key, as child.
type errExisting struct{ child string }

func (e *errExisting) Error() string { return "store: already renewed as " + e.child }

// ExistingChild reports the child serial of CheckRenewal's refusal of a
// retry, or "".
func ExistingChild(err error) string {
	var e *errExisting
	if errors.As(err, &e) {
		return e.child
	}
	return ""
}

// CheckRenewal is the renewal's part of Issue's checks, made inside the
// issuing transaction when iss.Certificate.RenewedFrom is set: the parent
// must be recorded and unrevoked, and not renewed before. It returns nil
// (record the renewal with PutRenewal's value), ErrRevoked, ErrNotFound,
// ErrRenewalReused (renewed before onto another key: the caller revokes
// the lineage), or a refusal naming the existing child (ExistingChild)
// when it was renewed before onto the same key.
func CheckRenewal(r LineageReader, iss *Issuance) error {
	parent := iss.Certificate.RenewedFrom
	p, err := r.Cert(parent)
	if err != nil {
		return err
	}
	if p == nil {
		return ErrNotFound
	}
	if p.Revoked() {
		return ErrRevoked
	}
	prev, err := r.Renewal(parent)
	if err != nil || prev == nil {
		return err
	}
	if key := iss.Certificate.PublicKeySHA256; key != "" && prev.Key == key {
		return &errExisting{child: prev.Child}
	}
	return ErrRenewalReused
}

// NewRenewal is the renewal record Issue writes under the parent's serial.
func NewRenewal(c *Certificate) Renewal {
	return Renewal{Child: c.Serial, Key: c.PublicKeySHA256}
}

// MaxLineage bounds the certificates one lineage walk visits (a week of
// renewals every few minutes is a few thousand).
const MaxLineage = 100_000

// LineageSet is what a revocation of one certificate revokes.
type LineageSet struct {
	// Revoke are the records to revoke: the certificate's own first,
	// then its unexpired descendants (each certificate renewed from one
	// in the lineage) and, when asked for, its unexpired ancestors.
	// Records already revoked are included (the caller keeps their
	// first revocation).
	Revoke []*Certificate
	// Tail is the last certificate of the lineage, whose renewal record
	// was read absent: a transaction that revokes the set must see it
	// still absent, or a renewal was added meanwhile ("" when the walk
	// ended at a swept certificate, which cannot renew).
	Tail string
}

// Lineage walks the lineage of serial at now: down through the renewal
// records, up (with ancestors) through RenewedFrom to the first
// certificate expired before now (its own ancestors expired before it).
// Expired descendants are walked through but not revoked. It returns
// ErrNotFound when serial is not recorded.
func Lineage(r LineageReader, serial string, ancestors bool, now time.Time) (*LineageSet, error) {
	c, err := r.Cert(serial)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, ErrNotFound
	}
	out := &LineageSet{Revoke: []*Certificate{c}}
	seen := map[string]bool{c.Serial: true}
	for cur := c.Serial; ; {
		ren, err := r.Renewal(cur)
		if err != nil {
			return nil, err
		}
		if ren == nil {
			out.Tail = cur
			break
		}
		if seen[ren.Child] {
			break
		}
		child, err := r.Cert(ren.Child)
		if err != nil {
			return nil, err
		}
		if child == nil {
			break // swept: it cannot renew
		}
		if len(seen) >= MaxLineage {
			return nil, fmt.Errorf("store: the lineage of %s is longer than %d certificates", serial, MaxLineage)
		}
		seen[child.Serial] = true
		if now.Before(child.NotAfter) {
			out.Revoke = append(out.Revoke, child)
		}
		cur = child.Serial
	}
	for cur := c; ancestors && cur.RenewedFrom != "" && !seen[cur.RenewedFrom]; {
		p, err := r.Cert(cur.RenewedFrom)
		if err != nil {
			return nil, err
		}
		if p == nil || !now.Before(p.NotAfter) || len(seen) >= MaxLineage {
			break
		}
		seen[p.Serial] = true
		out.Revoke = append(out.Revoke, p)
		cur = p
	}
	return out, nil
}

// issuedReader is what FindIssued reads (every Store has it).
type issuedReader interface {
	JoinToken(ctx context.Context, hash []byte) (*JoinToken, error)
	Certificate(ctx context.Context, serial string) (*Certificate, error)
	ReplayKey(ctx context.Context, key string) (string, error)
}

// FindIssued is how Issue answers a retry after its transaction refused
// iss with refusal (ErrTokenInvalid or ErrReplay): when the join token, or
// every replay key, was used by one certificate for the same SPIFFE ID,
// provisioner, task and public key (iss.Certificate.PublicKeySHA256), unrevoked
// and unexpired at iss.Now, it returns an *AlreadyIssuedError with that
// certificate; otherwise refusal. A used token's or replay key's serial
// never changes, so reading them after the transaction is as good as in
// it.
func FindIssued(ctx context.Context, r issuedReader, iss *Issuance, refusal error) error {
	want := &iss.Certificate
	if want.PublicKeySHA256 == "" || (iss.JoinToken == nil && len(iss.Once) == 0) {
		return refusal
	}
	serial := ""
	if iss.JoinToken != nil {
		if !errors.Is(refusal, ErrTokenInvalid) {
			return refusal
		}
		t, err := r.JoinToken(ctx, iss.JoinToken)
		if err != nil || t.UsedBy == "" || t.SPIFFEID != want.SPIFFEID || t.Provisioner != want.Provisioner {
			return refusal
		}
		serial = t.UsedBy
	} else if !errors.Is(refusal, ErrReplay) {
		return refusal
	}
	for _, k := range iss.Once {
		s, err := r.ReplayKey(ctx, k)
		if err != nil || serial != "" && s != serial {
			return refusal
		}
		serial = s
	}
	c, err := r.Certificate(ctx, serial)
	if err != nil || c.PublicKeySHA256 != want.PublicKeySHA256 || c.SPIFFEID != want.SPIFFEID ||
		c.Provisioner != want.Provisioner || c.Task != want.Task || c.Revoked() || !iss.Now.Before(c.NotAfter) || !c.Logged() {
		return refusal
	}
	return &AlreadyIssuedError{Certificate: *c}
}

// FindRenewed is how Issue answers a retried renewal (CheckRenewal's
// refusal naming child): the child's record, when it is still unrevoked,
// as an *AlreadyIssuedError; ErrRevoked otherwise.
func FindRenewed(ctx context.Context, r issuedReader, iss *Issuance, child string) error {
	c, err := r.Certificate(ctx, child)
	if errors.Is(err, ErrNotFound) {
		return ErrRevoked
	}
	if err != nil {
		return err
	}
	if c.Revoked() || !iss.Now.Before(c.NotAfter) || c.PublicKeySHA256 != iss.Certificate.PublicKeySHA256 {
		return ErrRevoked
	}
	return &AlreadyIssuedError{Certificate: *c}
}
