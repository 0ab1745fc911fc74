package wire

import "time"

// SignRequest is the body of POST /v1/sign.
type SignRequest struct {
	Provisioner string `json:"provisioner"`
	Token       string `json:"token"`
	CSR         string `json:"csr"`
	// TTL is a Go duration ("10m"); empty means the provisioner default.
	TTL string `json:"ttl,omitempty"`
	// Task optionally names the task the certificate is for (ValidTask);
	// it is recorded, and ending the task revokes the certificate.
	Task string `json:"task,omitempty"`
}

// SignResponse is the body of a successful /v1/sign, /v1/renew or
// /v1/workload/sign.
type SignResponse struct {
	Certificate string    `json:"certificate"`
	Chain       []string  `json:"chain"`
	Serial      string    `json:"serial"`
	SPIFFEID    string    `json:"spiffe_id"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	// Log is the certificate's issuance-log entry with its inclusion
	// proof; absent when the server keeps no log.
	Log *LogReceipt `json:"log,omitempty"`
}

// RenewRequest is the body of POST /v1/renew; both fields are optional and
// an empty body is allowed.
type RenewRequest struct {
	// CSR with a fresh key. Without it the certificate is renewed with
	// the key it already has.
	CSR string `json:"csr,omitempty"`
	TTL string `json:"ttl,omitempty"`
}

// ChallengeRequest is the body of POST /v1/challenge.
type ChallengeRequest struct {
	Provisioner string `json:"provisioner"`
}

// ChallengeResponse is a single-use nonce to put in the attestation.
type ChallengeResponse struct {
	Nonce     string    `json:"nonce"`
	ExpiresAt time.Time `json:"expires_at"`
}
