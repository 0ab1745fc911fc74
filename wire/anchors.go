package wire

import "time"

// AnchorStatus describes one trust anchor: GET /admin/v1/anchors lists
// them, and each transition answers with the anchor's new status.
type AnchorStatus struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// RootSHA256 is the root's fingerprint (what `enroll --fingerprint`
	// pins); NotAfter the root's expiry.
	RootSHA256 string    `json:"root_sha256"`
	IssuerSKI  string    `json:"issuer_ski"`
	NotAfter   time.Time `json:"not_after"`
	// IssuerNotAfter is the issuing CA's expiry.
	IssuerNotAfter time.Time `json:"issuer_not_after"`
	// CrossSigned reports a cross-signed certificate of the issuing CA
	// by the root active when it was staged.
	CrossSigned bool      `json:"cross_signed"`
	StagedAt    time.Time `json:"staged_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiringAt  time.Time `json:"retiring_at,omitzero"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	// Unexpired counts the unexpired certificates its issuing CA issued
	// to agents (the CA's own server and OCSP certificates aside), and
	// LastNotAfter is when the last of them expires.
	Unexpired    int       `json:"unexpired"`
	LastNotAfter time.Time `json:"last_not_after,omitzero"`
	// SafeToActivate and SafeToRetire say whether activate or retire
	// would go through without --force; Note says why not, or what next.
	SafeToActivate bool   `json:"safe_to_activate"`
	SafeToRetire   bool   `json:"safe_to_retire"`
	Note           string `json:"note,omitempty"`
}

// StageRequest is the body of POST /admin/v1/anchors/stage.
type StageRequest struct {
	// IntermediateOnly stages a new issuing CA under the current root
	// instead of a new root and issuing CA.
	IntermediateOnly bool `json:"intermediate_only,omitempty"`
	// CrossSign has the current root also certify the new issuing CA.
	CrossSign bool `json:"cross_sign,omitempty"`
}

// AnchorRequest is the body of POST /admin/v1/anchors/activate and
// /admin/v1/anchors/retire.
type AnchorRequest struct {
	ID    string `json:"id"`
	Force bool   `json:"force,omitempty"`
}
