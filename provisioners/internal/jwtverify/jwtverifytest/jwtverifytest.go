// Package jwtverifytest makes keys, key sets and tokens in the issuers'
// real formats for the JWT provisioners' tests, and serves them over TLS
// the way the issuers do. Test code only.
package jwtverifytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
)

// Start is the fixed time the tests run at.
var Start = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)

// Clock is a settable clock.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock at Start.
func NewClock() *Clock { c := &Clock{}; c.ns.Store(Start.UnixNano()); return c }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Advance moves the clock.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// Key is a signing key and how its issuer names it.
type Key struct {
	Alg    string
	KID    string
	Signer crypto.Signer
	// Cert is a self-signed certificate for the key (Azure publishes its
	// keys with x5c and x5t).
	Cert *x509.Certificate
}

var (
	rsaOnce sync.Once
	rsaPool []*rsa.PrivateKey
	rsaNext atomic.Int64
)

// RSA returns an RS256 key named kid. RSA keys come from a small pool made
// once per process, which keeps the tests fast; two calls in one test get
// different keys.
func RSA(t testing.TB, kid string) *Key {
	t.Helper()
	rsaOnce.Do(func() {
		for range 4 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaPool = append(rsaPool, k)
		}
	})
	k := rsaPool[int(rsaNext.Add(1))%len(rsaPool)]
	return &Key{Alg: jose.RS256, KID: kid, Signer: k, Cert: selfSigned(t, k)}
}

// EC returns an ES256 key named kid.
func EC(t testing.TB, kid string) *Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{Alg: jose.ES256, KID: kid, Signer: k, Cert: selfSigned(t, k)}
}

func selfSigned(t testing.TB, k crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "accounts.accesscontrol.windows.net"},
		NotBefore: Start.Add(-24 * time.Hour), NotAfter: Start.Add(5 * 365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// K8sKID is the kid Kubernetes gives a service-account signing key:
// base64url(SHA-256(PKIX DER of the public key)).
func K8sKID(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// GoogleKID is a kid in Google's style (40 hex digits).
func GoogleKID(pub crypto.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha1.Sum(der)
	return hex.EncodeToString(h[:])
}

// X5T is the certificate's SHA-1 thumbprint, base64url: Azure's kid and
// x5t.
func X5T(c *x509.Certificate) string {
	h := sha1.Sum(c.Raw)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// JWK is the public key as its issuer publishes it: Kubernetes and Google
// {use, kty, kid, alg, n, e} (EC: crv, x, y); with x5c true, Azure's
// {kty, use, kid, x5t, n, e, x5c, issuer}.
func (k *Key) JWK(x5c bool) map[string]any {
	m := map[string]any{"kid": k.KID, "use": "sig"}
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = b64(pub.N.Bytes())
		m["e"] = b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		m["kty"] = "EC"
		m["crv"] = pub.Curve.Params().Name
		// Uncompressed point: 0x04 || X || Y.
		raw, err := pub.Bytes()
		if err != nil {
			panic(err)
		}
		size := (len(raw) - 1) / 2
		m["x"] = b64(raw[1 : 1+size])
		m["y"] = b64(raw[1+size:])
	}
	if x5c {
		m["x5t"] = X5T(k.Cert)
		m["x5c"] = []string{base64.StdEncoding.EncodeToString(k.Cert.Raw)}
		m["issuer"] = "https://login.microsoftonline.com/{tenantid}/v2.0"
	} else {
		m["alg"] = k.Alg
	}
	return m
}

// JWKS is {"keys": [...]}.
func JWKS(keys ...map[string]any) []byte {
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return b
}

// WriteFile writes data to a new file in a test directory.
func WriteFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Sign signs claims with go-jose, with the header {"alg", "kid"} plus
// extra (e.g. "typ": "JWT", "x5t"). The payload is claims marshalled by
// encoding/json, so numbers are written as the issuers write them
// (123456789012, not go-jose's 1.23456789012e+11).
func (k *Key) Sign(t testing.TB, extra map[string]any, claims any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	for h, v := range extra {
		opts.WithHeader(jose.HeaderKey(h), v)
	}
	return sign(t, jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Alg),
		Key: jose.JSONWebKey{Key: k.Signer, KeyID: k.KID}}, opts, claims)
}

func sign(t testing.TB, key jose.SigningKey, opts *jose.SignerOptions, claims any) string {
	t.Helper()
	sig, err := jose.NewSigner(key, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// HS256 signs claims with HMAC-SHA256 keyed with secret, under kid: the
// algorithm-confusion attack when secret is an RSA public key's bytes.
func HS256(t testing.TB, secret []byte, kid string, claims any) string {
	t.Helper()
	return sign(t, jose.SigningKey{Algorithm: jose.HS256, Key: secret},
		(&jose.SignerOptions{}).WithHeader("kid", kid).WithType("JWT"), claims)
}

// PublicPEM is the key's public key as PEM (the secret an algorithm-
// confusion attacker uses).
func (k *Key) PublicPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Unsigned returns header.payload. with an empty signature ("alg": "none"
// when the header says so).
func Unsigned(header, claims any) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(claims)
	return b64(h) + "." + b64(p) + "."
}

// Set returns a deep copy of claims with the value at path replaced, or
// deleted when v is nil. Numbers keep their exact text.
func Set(claims map[string]any, v any, path ...string) map[string]any {
	b, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		panic(err)
	}
	cur := out
	for _, k := range path[:len(path)-1] {
		cur = cur[k].(map[string]any)
	}
	if v == nil {
		delete(cur, path[len(path)-1])
	} else {
		cur[path[len(path)-1]] = v
	}
	return out
}

// Tamper replaces the payload of a signed token, keeping its header and
// signature.
func Tamper(t testing.TB, token string, claims any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", token)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return parts[0] + "." + b64(p) + "." + parts[2]
}

// Server is an issuer's key endpoint over TLS: the JWKS at JWKSPath and,
// for OIDC discovery, /.well-known/openid-configuration naming Issuer.
// It counts the fetches.
type Server struct {
	*httptest.Server
	mu     sync.Mutex
	jwks   []byte
	issuer string
	// JWKSFetches and DiscoveryFetches count the GETs served.
	JWKSFetches, DiscoveryFetches atomic.Int64
}

// JWKSPath is where Server serves the set (Kubernetes' path).
const JWKSPath = "/openid/v1/jwks"

// NewServer serves jwks; the issuer is the server's own URL.
func NewServer(t testing.TB, jwks []byte) *Server {
	t.Helper()
	s := &Server{jwks: jwks}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		s.JWKSFetches.Add(1)
		s.mu.Lock()
		b := s.jwks
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(b)
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		s.DiscoveryFetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                s.Issuer(),
			"jwks_uri":                              s.URL + JWKSPath,
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	s.Server = httptest.NewTLSServer(mux)
	t.Cleanup(s.Close)
	return s
}

// SetJWKS replaces the served set.
func (s *Server) SetJWKS(b []byte) { s.mu.Lock(); s.jwks = b; s.mu.Unlock() }

// SetIssuer changes the issuer the discovery document names.
func (s *Server) SetIssuer(iss string) { s.mu.Lock(); s.issuer = iss; s.mu.Unlock() }

// Issuer is the issuer the discovery document names.
func (s *Server) Issuer() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.issuer != "" {
		return s.issuer
	}
	return s.URL
}

// JWKSURL is the set's URL.
func (s *Server) JWKSURL() string { return s.URL + JWKSPath }

// WriteFileAt replaces the file at path.
func WriteFileAt(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
