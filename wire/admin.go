package wire

import "time"

// TokenRequest is the body of POST /admin/v1/tokens.
type TokenRequest struct {
	SPIFFEID string `json:"spiffe_id"`
	// TTL is a Go duration; empty means the provisioner's token_ttl.
	TTL string `json:"ttl,omitempty"`
	// Count of tokens to create, all bound to SPIFFEID; zero means 1.
	Count int `json:"count,omitempty"`
	// Provisioner is the join-token provisioner's name; empty means the
	// only one configured.
	Provisioner string `json:"provisioner,omitempty"`
}

// TokenResponse lists the created tokens; this is their only plaintext.
type TokenResponse struct {
	Tokens []CreatedToken `json:"tokens"`
}

// CreatedToken is one new join token.
type CreatedToken struct {
	Token       string    `json:"token"`
	SPIFFEID    string    `json:"spiffe_id"`
	Provisioner string    `json:"provisioner"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// CertList is the body of GET /admin/v1/certs.
type CertList struct {
	Certificates []CertInfo `json:"certificates"`
}

// CertInfo is one certificate in GET /admin/v1/certs.
type CertInfo struct {
	Serial      string    `json:"serial"`
	SPIFFEID    string    `json:"spiffe_id"`
	Provisioner string    `json:"provisioner"`
	IssuerSKI   string    `json:"issuer_ski"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Revoked     bool      `json:"revoked"`
	RenewedFrom string    `json:"renewed_from,omitempty"`
}

// ReplayKeyRequest is the body of POST /admin/v1/replay-keys/clear.
type ReplayKeyRequest struct {
	// Key is a replay key as provisioners record it, e.g.
	// "aws-iid:aws:123456789012:i-0abc" (trust on first use per instance).
	Key string `json:"key"`
}

// ReplayKeyResponse names what was cleared.
type ReplayKeyResponse struct {
	Key string `json:"key"`
	// Serial is the certificate whose enrollment created the key.
	Serial string `json:"serial"`
}
