package wire

import ct "github.com/google/certificate-transparency-go"

// LogReceipt is the "log" object of a SignResponse: the certificate's entry
// in the CA's issuance log and the proof that a signed tree head includes
// it (agent.VerifyReceipt checks it).
type LogReceipt struct {
	Index uint64 `json:"index"`
	// Timestamp is the RFC 6962 leaf timestamp (milliseconds since the
	// Unix epoch): ctclient get-inclusion-proof --timestamp.
	Timestamp uint64 `json:"timestamp"`
	// LeafHash, RootHash and InclusionProof are base64 in JSON.
	LeafHash       []byte             `json:"leaf_hash"`
	TreeSize       uint64             `json:"tree_size"`
	RootHash       []byte             `json:"root_hash"`
	InclusionProof [][]byte           `json:"inclusion_proof"`
	STH            *ct.GetSTHResponse `json:"sth"`
}
