// Package translog is the pure core of agentca's issuance log: an RFC 6962
// Merkle tree whose entries are the certificates the CA issued.
//
// It builds the RFC 6962 leaf for an issued certificate (an x509_entry
// MerkleTreeLeaf, as github.com/google/certificate-transparency-go defines
// it), appends leaf hashes to a compact tree State, produces inclusion and
// consistency proofs from stored nodes, and signs and verifies tree heads.
// Hashing, compact ranges and proofs come from github.com/transparency-dev/merkle
// (the rfc6962 hasher, package compact, package proof); TLS encoding and the
// CT v1 structures come from certificate-transparency-go.
//
// translog does no I/O of its own and keeps no storage. The caller (the
// store) persists three things, all inside the transaction that records the
// certificates:
//
//   - the State after each append (State.MarshalBinary, one key),
//   - every node that Append reports through its NodeWriter (keyed by
//     compact.NodeID; a node's hash never changes once written), and
//   - each leaf's Leaf.Input by index and its index by Leaf.Hash, for
//     get-entries and get-proof-by-hash.
//
// Proofs and past roots are then computed from the stored nodes through a
// NodeReader with O(log n) reads: no tree is ever held in memory. Since
// stored nodes are immutable, a proof for a tree size the store has
// committed needs no snapshot isolation.
//
// translog has no HTTP handlers, no clock and no key management: timestamps
// (milliseconds since the Unix epoch, as RFC 6962 counts them) and the
// crypto.Signer are passed in.
package translog

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// hashSize is the size of every hash in the log: RFC 6962 uses SHA-256.
const hashSize = sha256.Size

// hasher is the RFC 6962 tree hasher; factory makes compact ranges with it.
var (
	hasher  = rfc6962.DefaultHasher
	factory = &compact.RangeFactory{Hash: hasher.HashChildren}
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrMalformedLeaf: leaf input bytes are not the TLS encoding of a v1
	// x509_entry MerkleTreeLeaf without extensions, or a certificate
	// cannot be encoded as one.
	ErrMalformedLeaf = errors.New("translog: malformed leaf")
	// ErrMalformedState: bytes are not a State encoding, or a leaf hash
	// handed to Append is not a SHA-256 hash.
	ErrMalformedState = errors.New("translog: malformed tree state")
	// ErrRange: a leaf index or tree size is out of range for the request
	// (index ≥ size, or size1 > size2). The HTTP edge maps it to 400.
	ErrRange = errors.New("translog: index or tree size out of range")
	// ErrNodeNotFound: a NodeReader has no hash for a node. NodeReaders
	// wrap it; for a size the log has reached, it means the store is
	// damaged.
	ErrNodeNotFound = errors.New("translog: node not found")
	// ErrUnsupportedKey: the log key is not one RFC 6962 allows for tree
	// head signatures (ECDSA P-256 or RSA ≥ 2048 bits).
	ErrUnsupportedKey = errors.New("translog: unsupported log key")
)

// InclusionError reports an inclusion proof that does not verify. Err is a
// proof.RootMismatchError (carrying the expected and the calculated root)
// when the proof is well formed but leads to another root.
type InclusionError struct {
	Index, Size uint64
	LeafHash    []byte
	Root        []byte
	Err         error
}

func (e *InclusionError) Error() string {
	return fmt.Sprintf("translog: inclusion proof for leaf %d (hash %x) in tree of size %d (root %x) does not verify: %v",
		e.Index, e.LeafHash, e.Size, e.Root, e.Err)
}

func (e *InclusionError) Unwrap() error { return e.Err }

// ConsistencyError reports a consistency proof that does not verify: the
// tree of size Size2 and root Root2 is not an extension of the tree of size
// Size1 and root Root1 (or the proof is malformed). Err is a
// proof.RootMismatchError when the proof is well formed but leads to
// another root.
type ConsistencyError struct {
	Size1, Size2 uint64
	Root1, Root2 []byte
	Err          error
}

func (e *ConsistencyError) Error() string {
	return fmt.Sprintf("translog: consistency proof from size %d (root %x) to size %d (root %x) does not verify: %v",
		e.Size1, e.Root1, e.Size2, e.Root2, e.Err)
}

func (e *ConsistencyError) Unwrap() error { return e.Err }

// STHError reports a signed tree head that does not verify against the log
// key: a bad signature, another log's ID, or a key that cannot verify CT
// tree heads at all.
type STHError struct {
	TreeSize  uint64
	Timestamp uint64
	// LogID is the SHA-256 of the key the tree head was checked against,
	// when the key could be encoded.
	LogID  [sha256.Size]byte
	Reason string
	Err    error
}

func (e *STHError) Error() string {
	s := fmt.Sprintf("translog: tree head (size %d, timestamp %d) does not verify: %s", e.TreeSize, e.Timestamp, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *STHError) Unwrap() error { return e.Err }
