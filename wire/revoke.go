package wire

import "time"

// RevokeRequest is the body of POST /v1/revoke and /admin/v1/revoke.
type RevokeRequest struct {
	// Serial in hex; on /v1/revoke empty means the caller's own.
	Serial string `json:"serial,omitempty"`
	// Reason is an RFC 5280 name such as "keyCompromise"; empty means
	// unspecified.
	Reason string `json:"reason,omitempty"`
}

// RevokeResponse is the answer to a revocation.
type RevokeResponse struct {
	Serial    string    `json:"serial"`
	SPIFFEID  string    `json:"spiffe_id"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason"`
}

// TaskEndRequest is the body of POST /admin/v1/tasks/end.
type TaskEndRequest struct {
	Task string `json:"task"`
	// Reason is an RFC 5280 reason name; empty means
	// cessationOfOperation.
	Reason string `json:"reason,omitempty"`
}

// TaskEndResponse lists what ending the task revoked.
type TaskEndResponse struct {
	Task string `json:"task"`
	// Revoked are the serials revoked now; certificates already revoked
	// or expired are not listed.
	Revoked []string `json:"revoked"`
}
