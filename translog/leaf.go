package translog

import (
	"fmt"

	ct "github.com/google/certificate-transparency-go"
	"github.com/google/certificate-transparency-go/tls"
	"golang.org/x/crypto/cryptobyte"
)

// Leaf is one entry of the log: an issued certificate as an RFC 6962
// MerkleTreeLeaf, its TLS encoding and its leaf hash.
type Leaf struct {
	// MerkleTreeLeaf is version v1, a timestamped_entry of type
	// x509_entry holding the certificate, without extensions.
	MerkleTreeLeaf ct.MerkleTreeLeaf
	// Input is the TLS encoding of MerkleTreeLeaf: what get-entries
	// returns as leaf_input, and what the store keeps per index.
	Input []byte
	// Hash is the RFC 6962 leaf hash SHA-256(0x00 || Input), the value
	// appended to the tree and looked up by get-proof-by-hash.
	Hash []byte
}

// NewLeaf builds the leaf for the certificate certDER issued at timestamp
// (milliseconds since the Unix epoch). This is the leaf ctclient computes
// for `get-inclusion-proof --cert_chain` with the same timestamp. The DER
// is not parsed; it must be non-empty and shorter than 2^24 bytes.
func NewLeaf(certDER []byte, timestamp uint64) (*Leaf, error) {
	if len(certDER) == 0 || len(certDER) >= 1<<24 {
		return nil, fmt.Errorf("%w: a certificate of %d bytes, want 1 to 2^24-1", ErrMalformedLeaf, len(certDER))
	}
	mtl := ct.CreateX509MerkleTreeLeaf(ct.ASN1Cert{Data: certDER}, timestamp)
	// The TLS encoding (RFC 6962 §3.4) of this one shape, written with
	// cryptobyte: tls.Marshal walks the structs by reflection, about a
	// tenth of the daemon's own (non-crypto) CPU per issuance.
	// TestNewLeafEncoding checks it is byte for byte tls.Marshal's.
	b := cryptobyte.NewFixedBuilder(make([]byte, 0, leafOverhead+len(certDER)))
	b.AddUint8(uint8(ct.V1))
	b.AddUint8(uint8(ct.TimestampedEntryLeafType))
	b.AddUint64(timestamp)
	b.AddUint16(uint16(ct.X509LogEntryType))
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(certDER) })
	b.AddUint16(0) // no extensions
	input, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedLeaf, err)
	}
	return &Leaf{MerkleTreeLeaf: *mtl, Input: input, Hash: hasher.HashLeaf(input)}, nil
}

// leafOverhead is the size of a leaf's TLS encoding beside the
// certificate: version, leaf type, timestamp, entry type, the
// certificate's 24-bit length and the empty extensions' 16-bit length.
const leafOverhead = 1 + 1 + 8 + 2 + 3 + 2

// ParseLeaf decodes leaf input bytes (as stored, or as get-entries returns
// them) and recomputes the leaf hash. It returns ErrMalformedLeaf unless
// input is exactly the encoding NewLeaf produces: v1, timestamped_entry,
// x509_entry, no extensions, nothing trailing. The certificate DER is not
// parsed.
func ParseLeaf(input []byte) (*Leaf, error) {
	var mtl ct.MerkleTreeLeaf
	rest, err := tls.Unmarshal(input, &mtl)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrMalformedLeaf, err)
	case len(rest) != 0:
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedLeaf, len(rest))
	case mtl.Version != ct.V1:
		return nil, fmt.Errorf("%w: version %d, want v1", ErrMalformedLeaf, mtl.Version)
	case mtl.LeafType != ct.TimestampedEntryLeafType || mtl.TimestampedEntry == nil:
		return nil, fmt.Errorf("%w: leaf type %d, want timestamped_entry", ErrMalformedLeaf, mtl.LeafType)
	case mtl.TimestampedEntry.EntryType != ct.X509LogEntryType || mtl.TimestampedEntry.X509Entry == nil:
		return nil, fmt.Errorf("%w: entry type %v, want x509_entry", ErrMalformedLeaf, mtl.TimestampedEntry.EntryType)
	case len(mtl.TimestampedEntry.Extensions) != 0:
		return nil, fmt.Errorf("%w: %d bytes of extensions, want none", ErrMalformedLeaf, len(mtl.TimestampedEntry.Extensions))
	}
	in := append([]byte(nil), input...)
	return &Leaf{MerkleTreeLeaf: mtl, Input: in, Hash: hasher.HashLeaf(in)}, nil
}

// Certificate returns the DER of the logged certificate.
func (l *Leaf) Certificate() []byte { return l.MerkleTreeLeaf.TimestampedEntry.X509Entry.Data }

// Timestamp returns the leaf's timestamp in milliseconds since the Unix
// epoch (ct.TimestampToTime converts it).
func (l *Leaf) Timestamp() uint64 { return l.MerkleTreeLeaf.TimestampedEntry.Timestamp }

// ExtraData returns the get-entries extra_data of an x509_entry: the TLS
// encoding of the certificate chain that follows the leaf (issuer first,
// DER each; the leaf itself is not included). CT clients refuse entries
// whose extra_data does not decode, so send it even when chain is empty.
func ExtraData(chain [][]byte) ([]byte, error) {
	cc := ct.CertificateChain{Entries: make([]ct.ASN1Cert, len(chain))}
	for i, der := range chain {
		cc.Entries[i] = ct.ASN1Cert{Data: der}
	}
	b, err := tls.Marshal(cc)
	if err != nil {
		return nil, fmt.Errorf("translog: encode certificate chain: %w", err)
	}
	return b, nil
}
