package translog

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"

	ct "github.com/google/certificate-transparency-go"
	"github.com/google/certificate-transparency-go/tls"
)

// Signer signs tree heads with the log key.
//
// CT v1 (RFC 6962 §2.1.4) allows only ECDSA on NIST P-256 and RSA
// (PKCS#1 v1.5, at least 2048 bits), both with SHA-256, and the CT
// project's verifiers accept nothing else; so a log key of another type
// (Ed25519, P-384) is refused. ECDSA P-256 is the one to use.
type Signer struct {
	signer   crypto.Signer
	alg      tls.SignatureAlgorithm
	logID    [sha256.Size]byte
	verifier *ct.SignatureVerifier
}

// NewSigner returns a Signer for the log key s (a key in memory or a KMS
// key alike). It returns ErrUnsupportedKey for a key CT v1 does not allow.
func NewSigner(s crypto.Signer) (*Signer, error) {
	pub := s.Public()
	var alg tls.SignatureAlgorithm
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA on %s, want P-256", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		alg = tls.ECDSA
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA with %d bits, want at least 2048", ErrUnsupportedKey, k.N.BitLen())
		}
		alg = tls.RSA
	default:
		return nil, fmt.Errorf("%w: %T (CT v1 tree heads are ECDSA P-256 or RSA)", ErrUnsupportedKey, pub)
	}
	id, err := LogID(pub)
	if err != nil {
		return nil, err
	}
	v, err := ct.NewSignatureVerifier(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return &Signer{signer: s, alg: alg, logID: id, verifier: v}, nil
}

// LogID returns the log's ID: SHA-256 of the key's DER SubjectPublicKeyInfo.
func (s *Signer) LogID() [sha256.Size]byte { return s.logID }

// Public returns the log's public key.
func (s *Signer) Public() crypto.PublicKey { return s.signer.Public() }

// Sign returns the signed tree head for st at timestamp (milliseconds since
// the Unix epoch; RFC 6962 wants it no older than any leaf in the tree).
// The signature is checked with the CT project's verifier before it is
// returned, so a misbehaving key (a KMS, an HSM) cannot publish a tree head
// that auditors would reject.
func (s *Signer) Sign(st State, timestamp uint64) (*ct.SignedTreeHead, error) {
	sth := &ct.SignedTreeHead{
		Version:   ct.V1,
		TreeSize:  st.Size(),
		Timestamp: timestamp,
		LogID:     ct.SHA256Hash(s.logID),
	}
	copy(sth.SHA256RootHash[:], st.Root())
	input, err := ct.SerializeSTHSignatureInput(*sth)
	if err != nil {
		return nil, fmt.Errorf("translog: sign tree head: %w", err)
	}
	digest := sha256.Sum256(input)
	sig, err := s.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("translog: sign tree head: %w", err)
	}
	sth.TreeHeadSignature = ct.DigitallySigned{
		Algorithm: tls.SignatureAndHashAlgorithm{Hash: tls.SHA256, Signature: s.alg},
		Signature: sig,
	}
	if err := s.verifier.VerifySTHSignature(*sth); err != nil {
		return nil, fmt.Errorf("translog: the log key made a tree head signature that does not verify: %w", err)
	}
	return sth, nil
}

// VerifySTH checks sth's signature against the log's public key with the CT
// project's verifier (what ctclient and CT monitors run), and, when
// sth.LogID is set, that it is this key's ID. It returns an *STHError when
// the tree head does not verify. It does not judge the timestamp.
func VerifySTH(pub crypto.PublicKey, sth *ct.SignedTreeHead) error {
	fail := &STHError{TreeSize: sth.TreeSize, Timestamp: sth.Timestamp}
	id, err := LogID(pub)
	if err != nil {
		fail.Reason, fail.Err = "bad log key", err
		return fail
	}
	fail.LogID = id
	if sth.LogID != (ct.SHA256Hash{}) && sth.LogID != ct.SHA256Hash(id) {
		fail.Reason = fmt.Sprintf("log ID %x is not this key's %x", sth.LogID[:], id[:])
		return fail
	}
	v, err := ct.NewSignatureVerifier(pub)
	if err != nil {
		fail.Reason, fail.Err = "unsupported log key", err
		return fail
	}
	if err := v.VerifySTHSignature(*sth); err != nil {
		fail.Reason, fail.Err = "bad signature", err
		return fail
	}
	return nil
}

// LogID returns SHA-256 of pub's DER SubjectPublicKeyInfo: the RFC 6962 log
// ID, and the key hash ctclient and log lists use.
func LogID(pub crypto.PublicKey) ([sha256.Size]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return sha256.Sum256(der), nil
}

// STHResponse returns sth as the RFC 6962 §4.3 get-sth JSON object (the
// signature TLS-encoded as a DigitallySigned); json.Marshal it as is. The
// receiving side decodes it with ct.GetSTHResponse.ToSignedTreeHead and
// checks it with VerifySTH.
func STHResponse(sth *ct.SignedTreeHead) (*ct.GetSTHResponse, error) {
	sig, err := tls.Marshal(tls.DigitallySigned(sth.TreeHeadSignature))
	if err != nil {
		return nil, fmt.Errorf("translog: encode tree head signature: %w", err)
	}
	return &ct.GetSTHResponse{
		TreeSize:          sth.TreeSize,
		Timestamp:         sth.Timestamp,
		SHA256RootHash:    append([]byte(nil), sth.SHA256RootHash[:]...),
		TreeHeadSignature: sig,
	}, nil
}
