package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/wire"
	xocsp "golang.org/x/crypto/ocsp"
)

// ocspTClock is a settable clock for the authority, the responder and the
// server of one OCSP test environment.
type ocspTClock struct{ ns atomic.Int64 }

func (c *ocspTClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *ocspTClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *ocspTClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// ocspTCRLs serves the CRL of each issuer it has a publisher for; the
// empty SKI is the active issuer.
type ocspTCRLs struct {
	active *crl.Publisher
	bySKI  map[string]*crl.Publisher
}

func (c *ocspTCRLs) CRL(ski string) *crl.CRL {
	if ski == "" {
		return c.active.Current()
	}
	if p := c.bySKI[ski]; p != nil {
		return p.Current()
	}
	return nil
}

var (
	ocspTHierarchyOnce sync.Once
	ocspTHierarchy     *ca.Hierarchy
	ocspTHierarchyErr  error
)

// ocspTEnv is the plain HTTP listener's handler of a CA with an OCSP
// responder (a delegated responder certificate the CA issued) and a CRL
// publisher, over a real bolt store.
type ocspTEnv struct {
	t         testing.TB
	clock     *ocspTClock
	issuer    *ca.Issuer
	store     *bolt.Store
	authority *ca.Authority
	responder *ocsp.Responder
	publisher *crl.Publisher
	srv       *api.Server
	handler   http.Handler // HTTPHandler
	admin     http.Handler // AdminHandler
}

const ocspTValidity = 5 * time.Minute

func ocspTNewEnv(t testing.TB) *ocspTEnv {
	t.Helper()
	ocspTHierarchyOnce.Do(func() {
		ocspTHierarchy, ocspTHierarchyErr = ca.NewHierarchy("agentca-ocsp-http-test", ca.ECP256, time.Now())
	})
	if ocspTHierarchyErr != nil {
		t.Fatal(ocspTHierarchyErr)
	}
	h := ocspTHierarchy
	e := &ocspTEnv{t: t, clock: &ocspTClock{}}
	e.clock.Set(time.Now().Truncate(time.Second))
	var err error
	if e.issuer, err = ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root); err != nil {
		t.Fatal(err)
	}
	if e.store, err = bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	if e.authority, err = ca.New(ca.Options{TrustDomain: "example.org", Issuer: e.issuer, Recorder: e.store, Now: e.clock.Now,
		PublicHTTP: "http://ca.example.org"}); err != nil {
		t.Fatal(err)
	}
	if e.responder, err = ocsp.New(ocsp.Options{Store: e.store, Validity: ocspTValidity, Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := e.authority.IssueResponder(context.Background(), key.Public(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.responder.SetSigner(&ocsp.Signer{Issuer: e.issuer.Cert, Cert: rc, Key: key}); err != nil {
		t.Fatal(err)
	}
	// The publisher keeps wall-clock time: its Run schedules with it.
	if e.publisher, err = crl.New(crl.Options{Issuer: e.issuer, Source: e.store, Debounce: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.publisher.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	join, err := jointoken.New("join", e.store, 15*time.Minute, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := api.NewTrust("example.org", []*x509.Certificate{h.Root}, 1, time.Minute, e.issuer)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := revocation.New(revocation.Options{Store: e.store,
		Notifier: revocation.Direct(revocation.CacheFunc(func(ctx context.Context, rec *store.Certificate) {
			e.responder.Revoked(ctx, rec)
			e.publisher.Changed()
		}))})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = api.New(api.Options{
		Authority: e.authority, Store: e.store, Trust: trust, Now: e.clock.Now,
		Provisioners: map[string]*api.Provisioner{
			"join": {Name: "join", Type: "join-token", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour, Provisioner: join},
		},
		OCSP:       e.responder,
		CRLs:       &ocspTCRLs{active: e.publisher, bySKI: map[string]*crl.Publisher{e.issuer.SKI: e.publisher}},
		Revocation: rev,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.handler = e.srv.HTTPHandler()
	e.admin = e.srv.AdminHandler()
	return e
}

// issue issues a leaf.
func (e *ocspTEnv) issue() *x509.Certificate {
	e.t.Helper()
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		e.t.Fatal(err)
	}
	issued, err := e.authority.Issue(context.Background(), &ca.Request{PublicKey: key.Public(),
		SPIFFEID: "spiffe://example.org/ocsp-http", Provisioner: "join"})
	if err != nil {
		e.t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		e.t.Fatal(err)
	}
	return leaf
}

func (e *ocspTEnv) request(cert *x509.Certificate, h crypto.Hash) []byte {
	e.t.Helper()
	der, err := xocsp.CreateRequest(cert, e.issuer.Cert, &xocsp.RequestOptions{Hash: h})
	if err != nil {
		e.t.Fatal(err)
	}
	return der
}

// serve runs one request through the HTTP listener's handler.
func (e *ocspTEnv) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, r)
	return w
}

func (e *ocspTEnv) post(body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/ocsp", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/ocsp-request")
	return e.serve(r)
}

// get requests /ocsp/<suffix>, suffix exactly as it goes on the wire.
func (e *ocspTEnv) get(suffix string, header ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/ocsp/"+suffix, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return e.serve(r)
}

// ocspTParse checks an OCSP answer's status and content type, and parses
// its body for cert against issuer.
func ocspTParse(t testing.TB, w *httptest.ResponseRecorder, cert, issuer *x509.Certificate) *xocsp.Response {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, body %q", w.Code, w.Body.Bytes())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/ocsp-response" {
		t.Fatalf("Content-Type %q", ct)
	}
	resp, err := xocsp.ParseResponseForCert(w.Body.Bytes(), cert, issuer)
	if err != nil {
		t.Fatalf("ParseResponseForCert: %v", err)
	}
	return resp
}

// ocspTMalformed checks that w is the OCSP malformedRequest answer.
func ocspTMalformed(t testing.TB, what string, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/ocsp-response" || !bytes.Equal(w.Body.Bytes(), ocsp.MalformedResponse) {
		t.Errorf("%s: %d %s %x; want 200 application/ocsp-response malformedRequest", what, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes())
	}
}

// ocspTJSONError checks a JSON error answer.
func ocspTJSONError(t testing.TB, what string, w *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	var body struct{ Error, Message string }
	if w.Code != status || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Errorf("%s: %d %s %q; want %d JSON", what, w.Code, w.Header().Get("Content-Type"), w.Body.Bytes(), status)
		return
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != code || body.Message == "" {
		t.Errorf("%s: body %q, want error %q with a message", what, w.Body.Bytes(), code)
	}
}

// ocspTSlashPlus issues leaves until one's OCSP request encodes, in
// standard base64, with both '/' and '+'.
func (e *ocspTEnv) ocspTSlashPlus() (*x509.Certificate, []byte, string) {
	e.t.Helper()
	for range 2000 {
		leaf := e.issue()
		der := e.request(leaf, 0)
		b64 := base64.StdEncoding.EncodeToString(der)
		if strings.Contains(b64, "/") && strings.Contains(b64, "+") {
			return leaf, der, b64
		}
	}
	e.t.Fatal("no request with '/' and '+' in its base64 after 2000 certificates")
	return nil, nil, ""
}

func TestOCSPHTTPPost(t *testing.T) {
	e := ocspTNewEnv(t)
	leaf := e.issue()
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		resp := ocspTParse(t, e.post(e.request(leaf, h)), leaf, e.issuer.Cert)
		if resp.Status != xocsp.Good || resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Fatalf("%v: status %d serial %x", h, resp.Status, resp.SerialNumber)
		}
	}
	// A real client over a real connection.
	ts := httptest.NewServer(e.handler)
	defer ts.Close()
	res, err := ts.Client().Post(ts.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(e.request(leaf, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("POST over HTTP: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if r, err := xocsp.ParseResponseForCert(body, leaf, e.issuer.Cert); err != nil || r.Status != xocsp.Good {
		t.Fatalf("POST over HTTP: %v", err)
	}
}

func TestOCSPHTTPGetWithSlashAndPlus(t *testing.T) {
	e := ocspTNewEnv(t)
	leaf, der, b64 := e.ocspTSlashPlus()
	post := e.post(der)
	ocspTParse(t, post, leaf, e.issuer.Cert)
	now := e.clock.Now()

	ts := httptest.NewServer(e.handler)
	defer ts.Close()
	escaped := strings.NewReplacer("/", "%2F", "+", "%2B", "=", "%3D").Replace(b64) // as openssl sends it
	for name, suffix := range map[string]string{
		"raw":        b64,
		"escaped":    escaped,
		"url-safe":   base64.RawURLEncoding.EncodeToString(der),
		"unpadded":   base64.RawStdEncoding.EncodeToString(der),
		"lower %2f":  strings.NewReplacer("/", "%2f", "+", "%2b").Replace(b64),
		"query-like": url.PathEscape(b64),
	} {
		t.Run(name, func(t *testing.T) {
			w := e.get(suffix)
			resp := ocspTParse(t, w, leaf, e.issuer.Cert)
			if resp.Status != xocsp.Good {
				t.Fatalf("status %d", resp.Status)
			}
			// Cached: byte for byte what POST got.
			if !bytes.Equal(w.Body.Bytes(), post.Body.Bytes()) {
				t.Error("GET and POST answers differ")
			}
			h := w.Header()
			if cc := h.Get("Cache-Control"); !strings.Contains(cc, "max-age="+strconv.Itoa(int(ocspTValidity.Seconds()))) {
				t.Errorf("Cache-Control %q, want max-age=%d", cc, int(ocspTValidity.Seconds()))
			}
			sum := sha256.Sum256(w.Body.Bytes())
			if etag := h.Get("ETag"); etag != `"`+hex.EncodeToString(sum[:16])+`"` {
				t.Errorf("ETag %q", etag)
			}
			if lm := h.Get("Last-Modified"); lm != resp.ThisUpdate.UTC().Format(http.TimeFormat) || lm != now.Format(http.TimeFormat) {
				t.Errorf("Last-Modified %q, want thisUpdate %s", lm, resp.ThisUpdate)
			}
			if ex := h.Get("Expires"); ex != resp.NextUpdate.UTC().Format(http.TimeFormat) {
				t.Errorf("Expires %q, want nextUpdate %s", ex, resp.NextUpdate)
			}

			// The same over a real connection with a real client.
			res, err := ts.Client().Get(ts.URL + "/ocsp/" + suffix)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || !bytes.Equal(body, post.Body.Bytes()) || res.Header.Get("ETag") != h.Get("ETag") {
				t.Errorf("GET over HTTP: %d, body equal %v, ETag %q", res.StatusCode, bytes.Equal(body, post.Body.Bytes()), res.Header.Get("ETag"))
			}
		})
	}
	// A serial of all ones puts "//" in the base64, which a ServeMux would
	// clean and redirect; over a real connection it is still answered.
	allOnes := &x509.Certificate{SerialNumber: new(big.Int).SetBytes(append([]byte{0x7f}, bytes.Repeat([]byte{0xff}, 15)...))}
	ones := base64.StdEncoding.EncodeToString(e.request(allOnes, 0))
	if !strings.Contains(ones, "//") {
		t.Fatalf("%s has no //", ones)
	}
	res, err := ts.Client().Get(ts.URL + "/ocsp/" + ones)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if r, err := xocsp.ParseResponseForCert(body, allOnes, e.issuer.Cert); res.StatusCode != http.StatusOK || err != nil || r.Status != xocsp.Unknown {
		t.Fatalf("GET with // over HTTP: %d, %v", res.StatusCode, err)
	}
	// max-age counts down with the clock.
	e.clock.Advance(100 * time.Second)
	if cc := e.get(b64).Header().Get("Cache-Control"); !strings.Contains(cc, "max-age=200") {
		t.Errorf("100s later Cache-Control %q, want max-age=200", cc)
	}
}

func TestOCSPHTTPIfNoneMatch(t *testing.T) {
	e := ocspTNewEnv(t)
	leaf, _, b64 := e.ocspTSlashPlus()
	first := e.get(b64)
	ocspTParse(t, first, leaf, e.issuer.Cert)
	etag := first.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	w := e.get(b64, "If-None-Match", etag)
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Fatalf("If-None-Match with the ETag: %d, %d bytes; want 304 and no body", w.Code, w.Body.Len())
	}
	if w.Header().Get("ETag") != etag {
		t.Errorf("304 ETag %q, want %q", w.Header().Get("ETag"), etag)
	}
	if w := e.get(b64, "If-None-Match", `"0000"`); w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), first.Body.Bytes()) {
		t.Fatalf("If-None-Match with another ETag: %d", w.Code)
	}
	// Once re-signed, the old ETag no longer matches.
	e.clock.Advance(ocspTValidity)
	if w := e.get(b64, "If-None-Match", etag); w.Code != http.StatusOK || w.Header().Get("ETag") == etag {
		t.Fatalf("after re-signing: %d ETag %q", w.Code, w.Header().Get("ETag"))
	}
}

func TestOCSPHTTPHead(t *testing.T) {
	e := ocspTNewEnv(t)
	leaf := e.issue()
	b64 := base64.StdEncoding.EncodeToString(e.request(leaf, 0))
	w := e.serve(httptest.NewRequest(http.MethodHead, "/ocsp/"+b64, nil))
	if w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("ETag") == "" {
		t.Fatalf("HEAD: %d, %d bytes, ETag %q", w.Code, w.Body.Len(), w.Header().Get("ETag"))
	}
}

func TestOCSPHTTPUnknownAndUnauthorized(t *testing.T) {
	e := ocspTNewEnv(t)
	leaf := e.issue()
	never := &x509.Certificate{SerialNumber: new(big.Int).Lsh(leaf.SerialNumber, 1)}
	if r := ocspTParse(t, e.post(e.request(never, 0)), never, e.issuer.Cert); r.Status != xocsp.Unknown {
		t.Errorf("never issued: status %d, want unknown", r.Status)
	}
	other, err := ca.NewHierarchy("agentca-ocsp-http-other", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := xocsp.CreateRequest(leaf, other.Issuing, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range map[string]*httptest.ResponseRecorder{
		"POST": e.post(foreign),
		"GET":  e.get(base64.StdEncoding.EncodeToString(foreign)),
	} {
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), ocsp.UnauthorizedResponse) {
			t.Errorf("%s for another CA: %d %x; want 200 with the unauthorized response", name, w.Code, w.Body.Bytes())
		}
	}
}

func TestOCSPHTTPMalformed(t *testing.T) {
	e := ocspTNewEnv(t)
	leaf := e.issue()
	der := e.request(leaf, 0)
	truncated := der[:len(der)-4]
	for name, body := range map[string][]byte{
		"garbage":   []byte("hello, OCSP"),
		"empty":     nil,
		"truncated": truncated,
		"SHA-384":   e.request(leaf, crypto.SHA384),
		"16 KiB":    bytes.Repeat([]byte{0x30}, 16<<10),
		"JSON":      []byte(`{"serial":"01"}`),
	} {
		ocspTMalformed(t, "POST "+name, e.post(body))
	}
	for name, suffix := range map[string]string{
		"bad base64":           "this*is*not*base64",
		"base64 of garbage":    base64.StdEncoding.EncodeToString([]byte("garbage")),
		"base64 of truncated":  base64.StdEncoding.EncodeToString(truncated),
		"broken padding":       base64.StdEncoding.EncodeToString(der)[:10] + "=" + base64.StdEncoding.EncodeToString(der)[10:],
		"empty":                "",
		"only slashes":         "////",
		"escaped nonsense":     "%00%ff%2F%2B",
		"dot segments":         "../../crl",
		"query":                "?x=" + base64.StdEncoding.EncodeToString(der),
		"space":                "MEIw%20QDA",
		"double-escaped slash": strings.ReplaceAll(base64.StdEncoding.EncodeToString(der), "/", "%252F") + "%252F",
	} {
		ocspTMalformed(t, "GET "+name, e.get(suffix))
	}
	// GET /ocsp without a request.
	ocspTMalformed(t, "GET /ocsp", e.serve(httptest.NewRequest(http.MethodGet, "/ocsp", nil)))
	// Malformed answers are not cacheable.
	if cc := e.get("!!!").Header().Get("Cache-Control"); strings.Contains(cc, "max-age") {
		t.Errorf("a malformedRequest answer has Cache-Control %q", cc)
	}
}

func TestOCSPHTTPTooLarge(t *testing.T) {
	e := ocspTNewEnv(t)
	big := bytes.Repeat([]byte{0x30}, 16<<10+1)
	ocspTJSONError(t, "POST 16 KiB + 1", e.post(big), http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	ocspTJSONError(t, "POST 1 MiB", e.post(bytes.Repeat([]byte{1}, 1<<20)), http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	// Without a Content-Length (chunked), the limit still holds.
	r := httptest.NewRequest(http.MethodPost, "/ocsp", io.MultiReader(bytes.NewReader(big)))
	r.ContentLength = -1
	ocspTJSONError(t, "POST chunked 16 KiB + 1", e.serve(r), http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	// And over a real connection.
	ts := httptest.NewServer(e.handler)
	defer ts.Close()
	res, err := ts.Client().Post(ts.URL+"/ocsp", "application/ocsp-request", io.MultiReader(bytes.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("POST chunked over HTTP: %d, want 413", res.StatusCode)
	}
	// A request line longer than any real OCSP request in base64.
	if w := e.get(strings.Repeat("A", 40<<10)); w.Code != http.StatusRequestURITooLong {
		t.Errorf("GET with a 40 KiB request: %d, want 414", w.Code)
	}
}

func TestOCSPHTTPMethods(t *testing.T) {
	e := ocspTNewEnv(t)
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		for _, path := range []string{"/ocsp", "/ocsp/MEIwQDA+MDwwOjAJBgUrDgMCGgUABBQ="} {
			w := e.serve(httptest.NewRequest(m, path, strings.NewReader("x")))
			ocspTJSONError(t, m+" "+path, w, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed)
			if allow := w.Header().Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
				t.Errorf("%s %s: Allow %q", m, path, allow)
			}
		}
	}
}

func TestOCSPHTTPCRL(t *testing.T) {
	e := ocspTNewEnv(t)
	leaf := e.issue()
	if _, err := e.store.Revoke(context.Background(), hex.EncodeToString(leaf.SerialNumber.Bytes()), 1, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.publisher.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/crl", "/crl/" + e.issuer.SKI, "/crl/" + strings.ToUpper(e.issuer.SKI), leaf.CRLDistributionPoints[0][len("http://ca.example.org"):]} {
		w := e.serve(httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("GET %s: %d %s", path, w.Code, w.Header().Get("Content-Type"))
		}
		rl, err := x509.ParseRevocationList(w.Body.Bytes())
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if err := rl.CheckSignatureFrom(e.issuer.Cert); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Fatalf("GET %s: entries %v", path, rl.RevokedCertificateEntries)
		}
		etag := w.Header().Get("ETag")
		if etag != e.publisher.Current().ETag {
			t.Errorf("GET %s: ETag %q", path, etag)
		}
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("If-None-Match", etag)
		if w := e.serve(r); w.Code != http.StatusNotModified {
			t.Errorf("GET %s If-None-Match: %d", path, w.Code)
		}
	}
	for _, path := range []string{"/crl/00ff", "/crl/" + strings.Repeat("ab", 20), "/crl/not-hex"} {
		ocspTJSONError(t, "GET "+path, e.serve(httptest.NewRequest(http.MethodGet, path, nil)), http.StatusNotFound, api.CodeNotFound)
	}
	ocspTJSONError(t, "POST /crl", e.serve(httptest.NewRequest(http.MethodPost, "/crl", nil)), http.StatusMethodNotAllowed, api.CodeMethodNotAllowed)
}

// A revocation over the admin API shows in OCSP at once and in the CRL
// within a second.
func TestOCSPHTTPRevocationShowsAtOnce(t *testing.T) {
	e := ocspTNewEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.publisher.Run(ctx)
	leaf, _, b64 := e.ocspTSlashPlus()
	if r := ocspTParse(t, e.get(b64), leaf, e.issuer.Cert); r.Status != xocsp.Good {
		t.Fatalf("before: status %d", r.Status)
	}
	body, _ := json.Marshal(wire.RevokeRequest{Serial: strings.ToUpper(hex.EncodeToString(leaf.SerialNumber.Bytes())), Reason: "keyCompromise"})
	start := time.Now()
	w := httptest.NewRecorder()
	e.admin.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/admin/v1/revoke", bytes.NewReader(body)))
	if w.Code != http.StatusOK {
		t.Fatalf("revoke: %d %s", w.Code, w.Body.Bytes())
	}
	// The clock has not moved; the good answer was cached.
	r := ocspTParse(t, e.get(b64), leaf, e.issuer.Cert)
	if r.Status != xocsp.Revoked || r.RevocationReason != xocsp.KeyCompromise || !r.RevokedAt.Equal(e.clock.Now()) {
		t.Fatalf("after revoke: status %d reason %d at %s", r.Status, r.RevocationReason, r.RevokedAt)
	}
	deadline := start.Add(time.Second)
	for {
		w := e.serve(httptest.NewRequest(http.MethodGet, "/crl", nil))
		rl, err := x509.ParseRevocationList(w.Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(rl.RevokedCertificateEntries, func(x x509.RevocationListEntry) bool {
			return x.SerialNumber.Cmp(leaf.SerialNumber) == 0 && x.ReasonCode == xocsp.KeyCompromise
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the revocation is not in /crl within 1s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// FuzzOCSPHandler: whatever is POSTed to /ocsp or put after /ocsp/ in a
// GET, the answer is never a 5xx (nor a panic), and a 200 carries either a
// response signed for this issuer or one of the OCSP error responses.
func FuzzOCSPHandler(f *testing.F) {
	e := ocspTNewEnv(f)
	leaf := e.issue()
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA512} {
		der := e.request(leaf, h)
		f.Add(der)
		f.Add([]byte(base64.StdEncoding.EncodeToString(der)))
		f.Add([]byte(url.PathEscape(base64.StdEncoding.EncodeToString(der))))
		f.Add([]byte(base64.RawURLEncoding.EncodeToString(der)))
	}
	check := func(t *testing.T, what string, w *httptest.ResponseRecorder) {
		t.Helper()
		if w.Code >= 500 {
			t.Fatalf("%s: status %d %q", what, w.Code, w.Body.Bytes())
		}
		if w.Code != http.StatusOK {
			return
		}
		b := w.Body.Bytes()
		if bytes.Equal(b, ocsp.MalformedResponse) || bytes.Equal(b, ocsp.UnauthorizedResponse) || bytes.Equal(b, ocsp.InternalResponse) {
			return
		}
		if _, err := xocsp.ParseResponse(b, e.issuer.Cert); err != nil {
			t.Fatalf("%s: 200 with %x: %v", what, b, err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check(t, "POST", e.post(data))
		// As a path: once as the raw request target, when it is one, and
		// once escaped by net/url.
		if u, err := url.ParseRequestURI("/ocsp/" + string(data)); err == nil {
			r := httptest.NewRequest(http.MethodGet, "/ocsp/", nil)
			r.URL = u
			r.RequestURI = u.RequestURI()
			check(t, "GET raw", e.serve(r))
		}
		r := httptest.NewRequest(http.MethodGet, "/ocsp/", nil)
		r.URL = &url.URL{Path: "/ocsp/" + string(data)}
		r.RequestURI = r.URL.RequestURI()
		check(t, "GET escaped", e.serve(r))
	})
}

// BenchmarkOCSPHandlerPOST: cached answers through the HTTP handler, in
// parallel.
func BenchmarkOCSPHandlerPOST(b *testing.B) {
	e := ocspTNewEnv(b)
	der := e.request(e.issue(), 0)
	if w := e.post(der); w.Code != http.StatusOK {
		b.Fatal(w.Code)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/ocsp", bytes.NewReader(der))
			w := httptest.NewRecorder()
			e.handler.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Errorf("status %d", w.Code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
}

// BenchmarkOCSPHandlerGET: the same with GET /ocsp/<base64>.
func BenchmarkOCSPHandlerGET(b *testing.B) {
	e := ocspTNewEnv(b)
	path := "/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(e.request(e.issue(), 0)))
	if w := e.serve(httptest.NewRequest(http.MethodGet, path, nil)); w.Code != http.StatusOK {
		b.Fatal(w.Code)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			e.handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
			if w.Code != http.StatusOK {
				b.Errorf("status %d", w.Code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
}
