package ca

// Trust-anchor rotation: creating the certificates of a new anchor and the
// rules of its lifecycle (staged → active → retiring → retired). The
// daemon keeps the anchors in the store and applies these rules inside
// store.UpdateAnchors, so concurrent operators (or replicas) cannot both
// activate.

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/agentca/agentca/store"
)

// Errors of the anchor lifecycle, matched with errors.Is.
var (
	// ErrAnchorNotFound: no anchor has that ID.
	ErrAnchorNotFound = errors.New("ca: no such anchor")
	// ErrAnchorState: the anchor's state does not allow the transition.
	ErrAnchorState = errors.New("ca: anchor state does not allow this")
	// ErrAnchorUnsafe: the transition could break handshakes or
	// revocation checking; it needs force.
	ErrAnchorUnsafe = errors.New("ca: unsafe anchor transition")
)

// NewRoot creates a self-signed root CA for key, valid RootLifetime from
// now, with subject "<org> Root CA <tag>" (no tag: "<org> Root CA").
func NewRoot(org, tag string, key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	tmpl := caTemplate(anchorName(org, "Root CA", tag), now, RootLifetime, 1)
	root, err := createCert(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	return root, nil
}

// NewIssuingCA certifies key as an issuing CA (path length 0) under root,
// signed with rootKey; it lives IssuingLifetime, cut at the root's expiry.
// Its OCSP responder and CRL are named under httpBase, the CA's public
// HTTP URL ("" names none).
func NewIssuingCA(org, tag string, key crypto.Signer, root *x509.Certificate, rootKey crypto.Signer, now time.Time, httpBase string) (*x509.Certificate, error) {
	lifetime := min(IssuingLifetime, root.NotAfter.Sub(now))
	if lifetime < 24*time.Hour {
		return nil, fmt.Errorf("ca: the root expires at %s, too soon for a new issuing CA", root.NotAfter.Format(time.RFC3339))
	}
	tmpl := caTemplate(anchorName(org, "Issuing CA", tag), now, lifetime, 0)
	addStatusURLs(tmpl, root, httpBase)
	iss, err := createCert(tmpl, root, key.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create issuing CA: %w", err)
	}
	return iss, nil
}

// CrossSign certifies the name and key of the issuing CA iss under another
// root (signed with that root's key), so that relying services trusting
// only that root can verify what iss issues. The certificate lives as
// long as iss, cut at the root's expiry; its status is named under
// httpBase as for NewIssuingCA (answered for by root).
func CrossSign(iss, root *x509.Certificate, rootKey crypto.Signer, now time.Time, httpBase string) (*x509.Certificate, error) {
	if err := keyMatches(root, rootKey); err != nil {
		return nil, err
	}
	tmpl := caTemplate(iss.Subject, now, 0, 0)
	tmpl.RawSubject = iss.RawSubject
	tmpl.NotAfter = iss.NotAfter
	if root.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = root.NotAfter
	}
	tmpl.SubjectKeyId = iss.SubjectKeyId
	addStatusURLs(tmpl, root, httpBase)
	cross, err := createCert(tmpl, root, iss.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: cross-sign: %w", err)
	}
	return cross, nil
}

func keyMatches(cert *x509.Certificate, key crypto.Signer) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pk, ok := cert.PublicKey.(equaler); !ok || !pk.Equal(key.Public()) {
		return errors.New("ca: the key does not match the certificate")
	}
	return nil
}

func anchorName(org, what, tag string) pkix.Name {
	cn := org + " " + what
	if tag != "" {
		cn += " " + tag
	}
	return pkix.Name{Organization: []string{org}, CommonName: cn}
}

// AnchorID names an anchor after its issuing CA: the first 16 hex digits
// of the subject key identifier.
func AnchorID(issuing *x509.Certificate) string {
	ski := hex.EncodeToString(issuing.SubjectKeyId)
	return ski[:min(16, len(ski))]
}

// ActivateAnchor makes the staged anchor id active in set and the active
// one retiring. Without force it refuses an anchor staged less than
// minStaged ago: agents that have not renewed since may not trust its root
// yet.
func ActivateAnchor(set *store.AnchorSet, id string, now time.Time, minStaged time.Duration, force bool) error {
	a := set.Find(id)
	if a == nil {
		return fmt.Errorf("%w: %q", ErrAnchorNotFound, id)
	}
	if a.State != store.AnchorStaged {
		return fmt.Errorf("%w: anchor %s is %s; only a staged anchor can be activated", ErrAnchorState, id, a.State)
	}
	if age := now.Sub(a.StagedAt); age < minStaged && !force {
		return fmt.Errorf("%w: anchor %s was staged %s ago, less than the longest leaf lifetime (%s): agents that have not renewed since may not trust it yet; wait %s or use --force",
			ErrAnchorUnsafe, id, age.Round(time.Second), minStaged, (minStaged - age).Round(time.Second))
	}
	if old := set.Active(); old != nil {
		old.State, old.RetiringAt = store.AnchorRetiring, now
	}
	a.State, a.ActivatedAt = store.AnchorActive, now
	return nil
}

// RetireAnchor retires a staged or retiring anchor. Without force it
// refuses while the anchor's issuing CA has unexpired leaves (leaves
// counts them, expiring by lastNotAfter): their holders still need the
// root, OCSP and the CRL.
func RetireAnchor(set *store.AnchorSet, id string, now time.Time, leaves int, lastNotAfter time.Time, force bool) error {
	a := set.Find(id)
	if a == nil {
		return fmt.Errorf("%w: %q", ErrAnchorNotFound, id)
	}
	switch a.State {
	case store.AnchorActive:
		return fmt.Errorf("%w: anchor %s is active; activate another anchor first", ErrAnchorState, id)
	case store.AnchorRetired:
		return fmt.Errorf("%w: anchor %s is already retired", ErrAnchorState, id)
	}
	if leaves > 0 && !force {
		return fmt.Errorf("%w: anchor %s still has %d unexpired certificates (the last expires at %s); wait or use --force",
			ErrAnchorUnsafe, id, leaves, lastNotAfter.Format(time.RFC3339))
	}
	if a.State == store.AnchorRetiring && a.RetiringAt.IsZero() {
		a.RetiringAt = now
	}
	a.State, a.RetiredAt = store.AnchorRetired, now
	return nil
}
