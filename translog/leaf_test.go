package translog

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	ct "github.com/google/certificate-transparency-go"
	"github.com/google/certificate-transparency-go/tls"
	ctx509 "github.com/google/certificate-transparency-go/x509"
)

// testCert returns the DER of a SPIFFE leaf certificate issued by a fresh
// CA, and the CA's DER.
func testCert(t testing.TB, id string) (leaf, issuer []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "translog test CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	issuer, err = x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(issuer)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes([]byte{0x5a, 1, 2, 3, 4, 5, 6, 7, 8}),
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(5 * time.Minute),
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leaf, err = x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return leaf, issuer
}

func TestLeafRoundTrip(t *testing.T) {
	der, issuer := testCert(t, "spiffe://example.org/agent/a")
	const ts = uint64(1767225600123)
	l, err := NewLeaf(der, ts)
	if err != nil {
		t.Fatal(err)
	}

	// The hash is the one ctclient computes for --cert_chain with this
	// timestamp: MerkleTreeLeafFromChain, then LeafHashForLeaf.
	chain := []*ctx509.Certificate{}
	for _, d := range [][]byte{der, issuer} {
		c, err := ctx509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	ctLeaf, err := ct.MerkleTreeLeafFromChain(chain, ct.X509LogEntryType, ts)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ct.LeafHashForLeaf(ctLeaf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l.Hash, want[:]) {
		t.Fatalf("leaf hash %x, want ct's %x", l.Hash, want)
	}

	back, err := ParseLeaf(l.Input)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Certificate(), der) || back.Timestamp() != ts || !bytes.Equal(back.Hash, l.Hash) || !bytes.Equal(back.Input, l.Input) {
		t.Fatal("ParseLeaf(NewLeaf().Input) differs from the leaf")
	}
}

func TestExtraData(t *testing.T) {
	der, issuer := testCert(t, "spiffe://example.org/agent/b")
	l, err := NewLeaf(der, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, chain := range [][][]byte{nil, {issuer}, {issuer, issuer}} {
		extra, err := ExtraData(chain)
		if err != nil {
			t.Fatal(err)
		}
		// What ct's get-entries client does with an entry.
		e, err := ct.RawLogEntryFromLeaf(7, &ct.LeafEntry{LeafInput: l.Input, ExtraData: extra})
		if err != nil {
			t.Fatalf("chain of %d: %v", len(chain), err)
		}
		if !bytes.Equal(e.Cert.Data, der) || len(e.Chain) != len(chain) {
			t.Fatalf("chain of %d: entry has cert %x and %d chain certificates", len(chain), e.Cert.Data[:8], len(e.Chain))
		}
		for i := range chain {
			if !bytes.Equal(e.Chain[i].Data, chain[i]) {
				t.Errorf("chain[%d] differs", i)
			}
		}
	}
	if _, err := ExtraData([][]byte{{}}); err == nil {
		t.Error("ExtraData with an empty certificate succeeded")
	}
}

func TestNewLeafErrors(t *testing.T) {
	for name, der := range map[string][]byte{"nil": nil, "empty": {}, "too long": make([]byte, 1<<24)} {
		if _, err := NewLeaf(der, 1); !errors.Is(err, ErrMalformedLeaf) {
			t.Errorf("NewLeaf(%s) = %v, want ErrMalformedLeaf", name, err)
		}
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := tls.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// malformedLeaves are leaf inputs ParseLeaf must refuse; also fuzz seeds.
func malformedLeaves(t testing.TB, good *Leaf) map[string][]byte {
	withEntry := func(f func(*ct.TimestampedEntry)) []byte {
		e := *good.MerkleTreeLeaf.TimestampedEntry
		f(&e)
		return mustMarshal(t, ct.MerkleTreeLeaf{Version: ct.V1, LeafType: ct.TimestampedEntryLeafType, TimestampedEntry: &e})
	}
	return map[string][]byte{
		"empty":         {},
		"one byte":      {0},
		"truncated":     good.Input[:len(good.Input)-3],
		"trailing byte": append(bytes.Clone(good.Input), 0),
		"version 2":     append([]byte{1}, good.Input[1:]...),
		"leaf type 1":   append([]byte{0, 1}, good.Input[2:]...),
		"precert entry": withEntry(func(e *ct.TimestampedEntry) {
			e.EntryType, e.X509Entry = ct.PrecertLogEntryType, nil
			e.PrecertEntry = &ct.PreCert{TBSCertificate: []byte{0x30, 0}}
		}),
		"extensions":              withEntry(func(e *ct.TimestampedEntry) { e.Extensions = ct.CTExtensions{1, 2, 3} }),
		"zero-length certificate": {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0},
	}
}

func TestParseLeafErrors(t *testing.T) {
	der, _ := testCert(t, "spiffe://example.org/agent/c")
	good, err := NewLeaf(der, 42)
	if err != nil {
		t.Fatal(err)
	}
	for name, input := range malformedLeaves(t, good) {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseLeaf(input); !errors.Is(err, ErrMalformedLeaf) {
				t.Fatalf("ParseLeaf() = %v, want ErrMalformedLeaf", err)
			}
		})
	}
}

// TestNewLeafEncoding: NewLeaf's encoding is byte for byte what
// tls.Marshal makes of the same MerkleTreeLeaf, at the length-prefix
// boundaries too, and parses back to it.
func TestNewLeafEncoding(t *testing.T) {
	der, _ := testCert(t, "spiffe://example.org/agent/enc")
	for _, d := range [][]byte{der, {0x30}, make([]byte, 255), make([]byte, 256), make([]byte, 1<<16), make([]byte, 1<<24-1)} {
		for _, ts := range []uint64{0, 1767225600000, 1<<64 - 1} {
			l, err := NewLeaf(d, ts)
			if err != nil {
				t.Fatalf("NewLeaf(%d bytes, %d): %v", len(d), ts, err)
			}
			want := mustMarshal(t, *ct.CreateX509MerkleTreeLeaf(ct.ASN1Cert{Data: d}, ts))
			if !bytes.Equal(l.Input, want) {
				t.Fatalf("NewLeaf(%d bytes, %d) encodes %x..., tls.Marshal %x...", len(d), ts, l.Input[:min(len(l.Input), 24)], want[:min(len(want), 24)])
			}
			back, err := ParseLeaf(l.Input)
			if err != nil || !bytes.Equal(back.Hash, l.Hash) || back.Timestamp() != ts || !bytes.Equal(back.Certificate(), d) {
				t.Fatalf("ParseLeaf(NewLeaf(%d bytes, %d)) = %v, %v", len(d), ts, back, err)
			}
		}
	}
}
