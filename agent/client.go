// Package agent is the client side of agentca: it enrolls a workload
// (makes a key locally, sends a CSR with an attestation), renews over mTLS,
// keeps the trust bundle current, and writes the credentials to disk
// atomically. Source (source.go) does all of that in the background and
// hands a Go service tls.Config hooks that always present a fresh
// certificate.
package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/agentca/agentca/keys"
	"github.com/agentca/agentca/wire"
)

// APIError is an error answer from the CA: its HTTP status and what the
// JSON error body says. In JSON it is that body, wire.Error.
type APIError struct {
	Status  int
	Code    string
	Message string
}

// MarshalJSON encodes e as its body, wire.Error.
func (e APIError) MarshalJSON() ([]byte, error) {
	return json.Marshal(wire.Error{Code: e.Code, Message: e.Message})
}

// UnmarshalJSON decodes a wire.Error body into e, leaving its status.
func (e *APIError) UnmarshalJSON(b []byte) error {
	var w wire.Error
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	e.Code, e.Message = w.Code, w.Message
	return nil
}

func (e *APIError) Error() string {
	return fmt.Sprintf("agent: CA answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Temporary reports whether retrying the same request later may succeed.
func (e *APIError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// maxResponse bounds what the client reads from the CA.
const maxResponse = 1 << 20

// Client talks to one CA over HTTPS.
type Client struct {
	base  *url.URL
	mu    sync.Mutex
	roots *x509.CertPool
	http  *http.Client
}

// setRoots replaces the anchors used to verify the CA's server
// certificate.
func (c *Client) setRoots(roots *x509.CertPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.http.CloseIdleConnections()
	c.roots, c.http = roots, newHTTPClient(roots, nil)
}

func (c *Client) state() (*x509.CertPool, *http.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roots, c.http
}

// NewClient returns a client for the CA at caURL (https://host:port) that
// trusts roots for the CA's server certificate.
func NewClient(caURL string, roots *x509.CertPool) (*Client, error) {
	u, err := url.Parse(caURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("agent: CA URL %q must be https://host:port", caURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &Client{base: u, roots: roots, http: newHTTPClient(roots, nil)}, nil
}

func newHTTPClient(roots *x509.CertPool, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, GetClientCertificate: getCert,
		VerifyConnection: VerifyCAServer}
	tr.MaxIdleConnsPerHost = 4
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// Credentials are a key with its certificate, chain and the CA's answer.
type Credentials struct {
	Key       crypto.Signer
	Leaf      *x509.Certificate
	Chain     []*x509.Certificate // issuing CA(s), leaf excluded
	Serial    string
	SPIFFEID  string
	NotBefore time.Time
	NotAfter  time.Time
	// LogReceipt proves the certificate is in the CA's issuance log (see
	// VerifyReceipt); nil for credentials loaded from disk.
	LogReceipt *wire.LogReceipt
}

// TLSCertificate returns the credentials for a tls.Config.
func (c *Credentials) TLSCertificate() *tls.Certificate {
	der := [][]byte{c.Leaf.Raw}
	for _, ch := range c.Chain {
		der = append(der, ch.Raw)
	}
	return &tls.Certificate{Certificate: der, PrivateKey: c.Key, Leaf: c.Leaf}
}

// CertPEM returns the leaf followed by its chain, the content of cert.pem.
func (c *Credentials) CertPEM() []byte {
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Leaf.Raw})
	for _, ch := range c.Chain {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: ch.Raw})
	}
	return b.Bytes()
}

// NewCSR makes a PEM certificate request for key. The CA takes only the
// key from it; the identity comes from the attestation.
func NewCSR(key crypto.Signer) (string, error) {
	der, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, key)
	if err != nil {
		return "", fmt.Errorf("agent: CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// Sign enrolls: it makes a CSR for key and exchanges it, with the
// attestation token, for a certificate. ttl zero means the CA's default.
func (c *Client) Sign(ctx context.Context, provisioner, token string, key crypto.Signer, ttl time.Duration) (*Credentials, error) {
	return c.SignForTask(ctx, provisioner, token, key, ttl, "")
}

// SignForTask is Sign with a task: the certificate is recorded for the
// task, and ending the task (agentca task end) revokes it. An empty task
// is Sign.
func (c *Client) SignForTask(ctx context.Context, provisioner, token string, key crypto.Signer, ttl time.Duration, task string) (*Credentials, error) {
	csr, err := NewCSR(key)
	if err != nil {
		return nil, err
	}
	req := wire.SignRequest{Provisioner: provisioner, Token: token, CSR: csr, Task: task}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	_, hc := c.state()
	return c.post(ctx, hc, "/v1/sign", &req, key)
}

// Renew exchanges the current credentials, presented over mTLS, for new
// ones. With newKey set the new certificate is for that key; with nil the
// current key is kept.
func (c *Client) Renew(ctx context.Context, cur *tls.Certificate, newKey crypto.Signer, ttl time.Duration) (*Credentials, error) {
	roots, _ := c.state()
	hc := newHTTPClient(roots, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur, nil })
	defer hc.CloseIdleConnections()
	var req wire.RenewRequest
	key, ok := cur.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("agent: current private key is not a crypto.Signer")
	}
	if newKey != nil {
		csr, err := NewCSR(newKey)
		if err != nil {
			return nil, err
		}
		req.CSR, key = csr, newKey
	}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	return c.post(ctx, hc, "/v1/renew", &req, key)
}

func (c *Client) post(ctx context.Context, hc *http.Client, path string, body any, key crypto.Signer) (*Credentials, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	var resp wire.SignResponse
	if err := c.do(hc, hreq, &resp); err != nil {
		return nil, err
	}
	return parseSignResponse(&resp, key)
}

func parseSignResponse(resp *wire.SignResponse, key crypto.Signer) (*Credentials, error) {
	leaf, err := parseCert(resp.Certificate)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("agent: the CA returned a certificate for another key")
	}
	cr := &Credentials{Key: key, Leaf: leaf, Serial: resp.Serial, SPIFFEID: resp.SPIFFEID, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		LogReceipt: resp.Log}
	for _, p := range resp.Chain {
		ch, err := parseCert(p)
		if err != nil {
			return nil, err
		}
		cr.Chain = append(cr.Chain, ch)
	}
	return cr, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

func parseCert(p string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("agent: the CA's answer has no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// do sends req and decodes a 2xx JSON answer into out, or returns the
// CA's error as *APIError.
func (c *Client) do(hc *http.Client, req *http.Request, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("agent: reading the CA's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(body, e) != nil || e.Code == "" {
			e.Code, e.Message = "http_error", strings.TrimSpace(string(body))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("agent: the CA's answer is not the expected JSON: %w", err)
	}
	return nil
}

// Roots fetches the CA's current trust anchors (/v1/roots).
func (c *Client) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	body, err := c.get(ctx, "/v1/roots")
	if err != nil {
		return nil, err
	}
	return ParseCertificates(body)
}

// Bundle is the CA's SPIFFE trust bundle (/v1/bundle).
type Bundle struct {
	// Roots are its X.509 authorities: every anchor to trust now.
	Roots []*x509.Certificate
	// RefreshHint is its spiffe_refresh_hint; zero when it has none.
	RefreshHint time.Duration
	// Sequence is its spiffe_sequence: it grows with every change of the
	// CA's anchors. Zero when it has none.
	Sequence uint64
}

// Bundle fetches the CA's SPIFFE trust bundle for trust domain td.
func (c *Client) Bundle(ctx context.Context, td spiffeid.TrustDomain) (*Bundle, error) {
	body, err := c.get(ctx, "/v1/bundle")
	if err != nil {
		return nil, err
	}
	b, err := spiffebundle.Parse(td, body)
	if err != nil {
		return nil, fmt.Errorf("agent: /v1/bundle: %w", err)
	}
	out := &Bundle{Roots: b.X509Authorities()}
	if len(out.Roots) == 0 {
		return nil, errors.New("agent: /v1/bundle has no X.509 authority")
	}
	out.RefreshHint, _ = b.RefreshHint()
	out.Sequence, _ = b.SequenceNumber()
	return out, nil
}

// get fetches path from the CA over the trusted TLS connection; anything
// but 200 is an error.
func (c *Client) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path, nil)
	if err != nil {
		return nil, err
	}
	_, hc := c.state()
	status, body, err := exchange(hc, req)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("agent: %s answered %d", path, status)
	}
	return body, nil
}

// ParseCertificates parses every CERTIFICATE block in PEM data; it fails
// on anything else or on no certificate at all.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("agent: unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("agent: no certificate found")
	}
	return out, nil
}

// Bootstrap fetches the CA's roots from caURL without trusting anything
// yet, then accepts them only if one root's SHA-256 fingerprint equals
// fingerprint (hex, colons allowed) and the CA's own server certificate
// chains to that root. It returns every root the CA published.
func Bootstrap(ctx context.Context, caURL, fingerprint string) ([]*x509.Certificate, error) {
	want, err := hex.DecodeString(strings.ToLower(strings.ReplaceAll(fingerprint, ":", "")))
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("agent: fingerprint %q is not a SHA-256 in hex", fingerprint)
	}
	u, err := url.Parse(caURL)
	if err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("agent: CA URL %q must be https://host:port", caURL)
	}
	var peer []*x509.Certificate
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		// The server is not trusted yet: its chain is checked below
		// against the pinned root before anything it said is used.
		InsecureSkipVerify: true, //nolint:gosec // verified against the pin below
		MinVersion:         tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			peer = cs.PeerCertificates
			return nil
		},
	}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	c := &Client{base: u, http: hc}
	roots, err := c.Roots(ctx)
	if err != nil {
		return nil, err
	}
	var pinned *x509.Certificate
	for _, r := range roots {
		got := sha256.Sum256(r.Raw)
		if bytes.Equal(got[:], want) {
			pinned = r
		}
	}
	if pinned == nil {
		return nil, errors.New("agent: no root published by the CA matches the fingerprint")
	}
	if len(peer) == 0 {
		return nil, errors.New("agent: the CA presented no server certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(pinned)
	inter := x509.NewCertPool()
	for _, p := range peer[1:] {
		inter.AddCert(p)
	}
	if _, err := peer[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: u.Hostname()}); err != nil {
		return nil, fmt.Errorf("agent: the CA's server certificate does not chain to the pinned root: %w", err)
	}
	if err := checkCAServer(peer[0]); err != nil {
		return nil, err
	}
	return roots, nil
}

// NewKey makes a leaf key of the named type (keys.KeyTypes).
func NewKey(keyType string) (crypto.Signer, error) {
	kt, err := keys.ParseKeyType(keyType)
	if err != nil {
		return nil, err
	}
	return keys.GenerateKey(kt)
}

// credentialsFromTLS turns a loaded key pair back into Credentials.
func credentialsFromTLS(pair *tls.Certificate) (*Credentials, error) {
	if len(pair.Certificate) == 0 {
		return nil, errors.New("agent: no certificate")
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("agent: private key is not a crypto.Signer")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	cr := &Credentials{Key: key, Leaf: leaf, Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
	if len(leaf.URIs) == 1 {
		cr.SPIFFEID = leaf.URIs[0].String()
	}
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		cr.Chain = append(cr.Chain, c)
	}
	return cr, nil
}

// KeyTypeOf names the type of key (for making a new key of the same kind);
// unknown kinds map to ec-p256.
func KeyTypeOf(key crypto.Signer) string {
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return string(keys.ECP384)
		}
	case ed25519.PublicKey:
		return string(keys.Ed25519)
	case *rsa.PublicKey:
		return string(keys.RSA2048)
	}
	return string(keys.ECP256)
}

// Revoke revokes a certificate over mTLS with the current credentials:
// its own (serial empty) or, for an admin, any serial. reason is an RFC
// 5280 name ("keyCompromise"); empty means unspecified. out receives the
// JSON answer.
func (c *Client) Revoke(ctx context.Context, cur *tls.Certificate, serial, reason string, out any) error {
	roots, _ := c.state()
	hc := newHTTPClient(roots, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur, nil })
	defer hc.CloseIdleConnections()
	b, err := json.Marshal(map[string]string{"serial": serial, "reason": reason})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+"/v1/revoke", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(hc, req, out)
}

// Challenge asks the CA for a single-use nonce to bind into an attestation
// (azure-imds).
func (c *Client) Challenge(ctx context.Context, provisioner string) (string, error) {
	b, err := json.Marshal(wire.ChallengeRequest{Provisioner: provisioner})
	if err != nil {
		return "", err
	}
	_, hc := c.state()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+"/v1/challenge", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	var out wire.ChallengeResponse
	if err := c.do(hc, req, &out); err != nil {
		return "", err
	}
	if out.Nonce == "" {
		return "", errors.New("agent: the CA returned no nonce")
	}
	return out.Nonce, nil
}

// exchange sends req with hc and returns the answer's status and body (at
// most maxResponse bytes).
func exchange(hc *http.Client, req *http.Request) (int, []byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("agent: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return 0, nil, fmt.Errorf("agent: reading the answer of %s: %w", req.URL.Path, err)
	}
	return resp.StatusCode, body, nil
}
