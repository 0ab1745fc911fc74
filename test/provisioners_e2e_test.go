package test

// End-to-end tests of the attested-enrollment provisioners (k8s-sa,
// aws-iid, azure-imds) against the real daemon and the real agent CLI:
// every key, token, document and PKCS#7 message is generated here in the
// format the real issuer uses, and the metadata services and the
// Kubernetes API server are httptest servers speaking the real protocols.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/agentca/agentca/wire"
)

// ---------------------------------------------------------------------
// Shared helpers.

// provRSAKey returns a new RSA-2048 key.
func provRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// provUUID is a random (version 4) UUID, lowercase, as Kubernetes and
// Azure write them.
func provUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// provSuffix is a random pod-name suffix in the ReplicaSet style.
func provSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

func provB64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// provAddProvisioners appends provisioner entries to agentca.json.
func provAddProvisioners(ca *testCA, entries ...map[string]any) {
	ca.t.Helper()
	ca.editConfig(func(cfg map[string]any) {
		list, _ := cfg["provisioners"].([]any)
		for _, e := range entries {
			list = append(list, e)
		}
		cfg["provisioners"] = list
	})
}

// provEnroll runs agentca enroll against ca with --root, writing to out.
func provEnroll(t *testing.T, ca *testCA, out string, args ...string) result {
	t.Helper()
	return runCLI(t, append([]string{"enroll", "--ca", ca.URL, "--root", ca.rootsFile(), "--out", out}, args...)...)
}

// provEnrolled checks that enroll succeeded and wrote credentials for
// wantID that chain to the CA's roots.
func provEnrolled(t *testing.T, ca *testCA, r result, out, wantID string) *creds {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	cr := readCreds(t, out)
	if got := spiffeIDOf(t, cr.leaf); got != wantID {
		t.Errorf("enrolled as %s, want %s", got, wantID)
	}
	verifyLeaf(t, cr.leaf, cr.chain, ca.pool())
	if !strings.Contains(r.stdout, wantID) {
		t.Errorf("enroll did not print the SPIFFE ID %s: %q", wantID, r.stdout)
	}
	return cr
}

// provRefused checks that enroll failed with exit 1 and one line on
// stderr, and wrote no certificate.
func provRefused(t *testing.T, r result, out string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("want exit 1:\n%s", r)
	}
	oneLine(t, r)
	if _, err := os.Stat(filepath.Join(out, "cert.pem")); err == nil {
		t.Errorf("a refused enroll wrote %s", filepath.Join(out, "cert.pem"))
	}
}

// provLogLine reports whether one line of log contains every string.
func provLogLine(log string, all ...string) bool {
	for line := range strings.SplitSeq(log, "\n") {
		ok := true
		for _, s := range all {
			if !strings.Contains(line, s) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// provCountLines counts the lines of log that contain every string.
func provCountLines(log string, all ...string) int {
	n := 0
	for line := range strings.SplitSeq(log, "\n") {
		ok := line != ""
		for _, s := range all {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// provWantLog waits (briefly) for a daemon log line holding every string.
func provWantLog(t *testing.T, ca *testCA, all ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !provLogLine(ca.proc.log(), all...) {
		if time.Now().After(deadline) {
			t.Errorf("no daemon log line containing all of %q", all)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// provWantAuditRefusal waits for the audit line of a refused sign for
// provisioner whose reason contains every one of reason.
func provWantAuditRefusal(t *testing.T, ca *testCA, provisioner string, reason ...string) {
	t.Helper()
	provWantLog(t, ca, append([]string{"msg=audit", "op=sign", "provisioner=" + provisioner + " ", "outcome=refused"}, reason...)...)
}

// provSign posts a /v1/sign request with a fresh key.
func provSign(t *testing.T, ca *testCA, provisioner, token string) apiResp {
	t.Helper()
	hc := ca.client(nil)
	defer hc.CloseIdleConnections()
	return postJSON(t, hc, ca.URL+"/v1/sign", signBody(provisioner, token, csrPEM(t, newECKey(t), nil), ""))
}

// ---------------------------------------------------------------------
// Kubernetes: a cluster's service-account issuer and its pods.

const (
	provK8sIssuer   = "https://kubernetes.default.svc.cluster.local"
	provK8sAudience = "agentca"
)

// provK8sSigner is the cluster's service-account signing key, shared by
// the tests (RSA key generation is slow under -race).
var provK8sSigner = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// provCluster is a cluster's issuer: its key, kid and a JWKS file.
type provCluster struct {
	key      *rsa.PrivateKey
	kid      string
	jwksFile string
}

// provNewCluster writes the cluster's JWKS, as `kubectl get --raw
// /openid/v1/jwks` prints it, into a new file.
func provNewCluster(t *testing.T) *provCluster {
	t.Helper()
	key, err := provK8sSigner()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(der)
	c := &provCluster{key: key, kid: provB64URL(h[:]), jwksFile: filepath.Join(t.TempDir(), "cluster-jwks.json")}
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]any{{
		"use": "sig", "kty": "RSA", "kid": c.kid, "alg": "RS256",
		"n": provB64URL(key.N.Bytes()), "e": provB64URL(big.NewInt(int64(key.E)).Bytes()),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c.jwksFile, jwks)
	return c
}

// provK8sEntry is a k8s-sa provisioner entry for agentca.json checking
// signatures with the cluster's JWKS file.
func (c *provCluster) entry(name string, extra map[string]any) map[string]any {
	e := map[string]any{"type": "k8s-sa", "name": name, "issuer": provK8sIssuer, "audience": provK8sAudience, "jwks_file": c.jwksFile}
	for k, v := range extra {
		e[k] = v
	}
	return e
}

// provPod is a pod running as a service account.
type provPod struct {
	ns, sa, saUID, name, uid, node, nodeUID string
}

func provNewPod(ns, sa string) provPod {
	return provPod{ns: ns, sa: sa, saUID: provUUID(), name: sa + "-7d4b9c6f5-" + provSuffix(), uid: provUUID(), node: "node-1", nodeUID: provUUID()}
}

// claims are the pod's projected token's claims, exactly as the API
// server writes them (Kubernetes 1.30+, with the node).
func (p provPod) claims(now time.Time) map[string]any {
	return map[string]any{
		"aud": []string{provK8sAudience},
		"exp": now.Add(10 * time.Minute).Unix(),
		"iat": now.Unix(),
		"iss": provK8sIssuer,
		"jti": provUUID(),
		"kubernetes.io": map[string]any{
			"namespace":      p.ns,
			"node":           map[string]any{"name": p.node, "uid": p.nodeUID},
			"pod":            map[string]any{"name": p.name, "uid": p.uid},
			"serviceaccount": map[string]any{"name": p.sa, "uid": p.saUID},
		},
		"nbf": now.Unix(),
		"sub": "system:serviceaccount:" + p.ns + ":" + p.sa,
	}
}

// sign makes the RS256 JWS of claims under the cluster's key.
func (c *provCluster) sign(t *testing.T, claims any) string {
	t.Helper()
	hdr, err := json.Marshal(map[string]string{"alg": "RS256", "kid": c.kid})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := provB64URL(hdr) + "." + provB64URL(payload)
	h := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + provB64URL(sig)
}

// token is the pod's projected token, issued now.
func (c *provCluster) token(t *testing.T, p provPod) string {
	t.Helper()
	return c.sign(t, p.claims(time.Now()))
}

// provTokenFile writes token as the kubelet does (no newline) into a new
// file.
func provTokenFile(t *testing.T, token string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "agentca")
	writeFile(t, f, []byte(token))
	return f
}

// provAPIServer is a Kubernetes API server answering TokenReviews and pod
// GETs in the real JSON format, for the tokens it was told about.
type provAPIServer struct {
	srv     *httptest.Server
	bearer  string // the CA's credentials
	caFile  string // PEM of the server's certificate
	tokFile string // the CA's bearer token file

	mu        sync.Mutex
	tokens    map[string]provPod // token → pod, for tokens the server issued
	revoked   map[string]bool    // tokens whose pod was deleted
	reviews   int
	audiences [][]string
	podGets   int
}

func provNewAPIServer(t *testing.T) *provAPIServer {
	t.Helper()
	a := &provAPIServer{bearer: "eyJhbGciOiJSUzI1NiJ9.ca-" + provSuffix() + ".sig", tokens: map[string]provPod{}, revoked: map[string]bool{}}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	dir := t.TempDir()
	a.caFile = filepath.Join(dir, "ca.crt")
	a.tokFile = filepath.Join(dir, "token")
	writeFile(t, a.caFile, certPEM(a.srv.Certificate()))
	writeFile(t, a.tokFile, []byte(a.bearer))
	return a
}

// issued tells the server about a token it issued for p.
func (a *provAPIServer) issued(token string, p provPod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[token] = p
}

// revoke makes the server reject token (its pod was deleted).
func (a *provAPIServer) revoke(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked[token] = true
}

func provStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code})
}

func (a *provAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+a.bearer {
		provStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/apis/authentication.k8s.io/v1/tokenreviews":
		var req struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Spec       struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Kind != "TokenReview" || req.APIVersion != "authentication.k8s.io/v1" {
			provStatus(w, http.StatusBadRequest, "BadRequest", "not a TokenReview")
			return
		}
		a.reviews++
		a.audiences = append(a.audiences, req.Spec.Audiences)
		status := map[string]any{"user": map[string]any{}}
		p, known := a.tokens[req.Spec.Token]
		switch {
		case !known:
			status["error"] = "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
		case a.revoked[req.Spec.Token]:
			status["error"] = "[invalid bearer token, service account token has been invalidated]"
		case !slices.Contains(req.Spec.Audiences, provK8sAudience):
			status["error"] = "[invalid bearer token, token audiences [\"agentca\"] is invalid for the target audiences " + fmt.Sprint(req.Spec.Audiences) + "]"
		default:
			status["authenticated"] = true
			status["audiences"] = []string{provK8sAudience}
			status["user"] = map[string]any{
				"username": "system:serviceaccount:" + p.ns + ":" + p.sa,
				"uid":      p.saUID,
				"groups":   []string{"system:serviceaccounts", "system:serviceaccounts:" + p.ns, "system:authenticated"},
				"extra": map[string][]string{
					"authentication.kubernetes.io/credential-id": {"JTI=" + provUUID()},
					"authentication.kubernetes.io/node-name":     {p.node},
					"authentication.kubernetes.io/node-uid":      {p.nodeUID},
					"authentication.kubernetes.io/pod-name":      {p.name},
					"authentication.kubernetes.io/pod-uid":       {p.uid},
				},
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
			"metadata": map[string]any{"creationTimestamp": nil},
			"spec":     map[string]any{"token": req.Spec.Token, "audiences": req.Spec.Audiences},
			"status":   status,
		})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/"):
		a.podGets++
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/"), "/")
		if len(parts) != 3 || parts[1] != "pods" {
			provStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
			return
		}
		for tok, p := range a.tokens {
			if p.ns != parts[0] || p.name != parts[2] || a.revoked[tok] {
				continue
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{
				"kind": "Pod", "apiVersion": "v1",
				"metadata": map[string]any{"name": p.name, "namespace": p.ns, "uid": p.uid, "resourceVersion": "48213",
					"creationTimestamp": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
					"labels":            map[string]string{"app": p.sa}},
				"spec": map[string]any{"serviceAccountName": p.sa, "serviceAccount": p.sa, "nodeName": p.node,
					"containers": []map[string]any{{"name": "app", "image": "registry.example/app:1.0"}}},
				"status": map[string]any{"phase": "Running", "podIP": "10.244.1.17"},
			})
			return
		}
		provStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("pods %q not found", parts[2]))
	default:
		provStatus(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
	}
}

// ---------------------------------------------------------------------
// 1. enroll --k8s.

func TestProvK8sEnroll(t *testing.T) {
	t.Parallel()
	cl := provNewCluster(t)
	api := provNewAPIServer(t)
	ca := newCA(t, caOptions{})
	provAddProvisioners(ca,
		cl.entry("k8s", map[string]any{"namespaces": []string{"apps", "batch"}}),
		// TokenReview mode, the signature left to the API server.
		map[string]any{"type": "k8s-sa", "name": "k8s-review", "issuer": provK8sIssuer, "audience": provK8sAudience,
			"api_server": api.srv.URL, "api_ca_file": api.caFile, "api_token_file": api.tokFile},
	)
	ca.start()

	t.Run("offline", func(t *testing.T) {
		pod := provNewPod("apps", "web")
		out := filepath.Join(t.TempDir(), "creds")
		r := provEnroll(t, ca, out, "--k8s", "--token-file", provTokenFile(t, cl.token(t, pod)))
		cr := provEnrolled(t, ca, r, out, "spiffe://example.org/ns/apps/sa/web")
		certs := ca.certs("spiffe://example.org/ns/apps/sa/web")
		if len(certs) != 1 || certs[0].Provisioner != "k8s" || normSerial(t, certs[0].Serial) != cr.leaf.SerialNumber.Text(16) {
			t.Errorf("certs list: want the one certificate by provisioner k8s, got %+v", certs)
		}
		provWantLog(t, ca, "msg=audit", "op=sign", "provisioner=k8s ", "outcome=issued", "spiffe_id=spiffe://example.org/ns/apps/sa/web")
	})

	t.Run("namespace outside the allow-list", func(t *testing.T) {
		pod := provNewPod("kube-system", "web")
		out := filepath.Join(t.TempDir(), "creds")
		r := provEnroll(t, ca, out, "--k8s", "--token-file", provTokenFile(t, cl.token(t, pod)))
		provRefused(t, r, out)
		provWantAuditRefusal(t, ca, "k8s", "error=unauthorized", "namespace", "kube-system", "not allowed")
		if got := ca.certs("spiffe://example.org/ns/kube-system/sa/web"); len(got) != 0 {
			t.Errorf("a refused token got certificates: %+v", got)
		}
	})

	t.Run("TokenReview", func(t *testing.T) {
		pod := provNewPod("batch", "nightly")
		tok := cl.token(t, pod)
		api.issued(tok, pod)
		out := filepath.Join(t.TempDir(), "creds")
		r := provEnroll(t, ca, out, "--k8s", "--provisioner", "k8s-review", "--token-file", provTokenFile(t, tok))
		provEnrolled(t, ca, r, out, "spiffe://example.org/ns/batch/sa/nightly")
		api.mu.Lock()
		reviews, podGets, auds := api.reviews, api.podGets, slices.Clone(api.audiences)
		api.mu.Unlock()
		if reviews != 1 || podGets != 1 {
			t.Errorf("the API server saw %d TokenReviews and %d pod GETs, want 1 and 1", reviews, podGets)
		}
		if len(auds) != 1 || !slices.Equal(auds[0], []string{provK8sAudience}) {
			t.Errorf("TokenReview audiences %q, want [[agentca]]", auds)
		}

		// The pod is deleted: the API server no longer authenticates
		// its token, although the token is well signed and unexpired.
		pod2 := provNewPod("batch", "nightly")
		tok2 := cl.token(t, pod2)
		api.issued(tok2, pod2)
		api.revoke(tok2)
		out2 := filepath.Join(t.TempDir(), "creds")
		r = provEnroll(t, ca, out2, "--k8s", "--provisioner", "k8s-review", "--token-file", provTokenFile(t, tok2))
		provRefused(t, r, out2)
		provWantAuditRefusal(t, ca, "k8s-review", "error=unauthorized", "TokenReview", "not authenticated", "invalidated")
	})
}

// ---------------------------------------------------------------------
// 2. enroll --aws-iid.

const (
	provAWSAccount = "123456789012"
	provAWSRegion  = "us-east-1"
)

// provAWSDoc is an instance identity document in AWS's format, byte for
// byte: two-space indent, " : " separators, nulls, AWS's key order.
func provAWSDoc(account, instanceID string, pending time.Time) []byte {
	return fmt.Appendf(nil, `{
  "accountId" : %q,
  "architecture" : "x86_64",
  "availabilityZone" : "%sa",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0abcdef1234567890",
  "instanceId" : %q,
  "instanceType" : "t3.micro",
  "kernelId" : null,
  "pendingTime" : %q,
  "privateIp" : "172.31.1.111",
  "ramdiskId" : null,
  "region" : %q,
  "version" : "2017-09-30"
}`, account, provAWSRegion, instanceID, pending.UTC().Format(time.RFC3339), provAWSRegion)
}

// provAWSCert is a self-signed certificate shaped like AWS's regional
// RSA-2048 ones.
func provAWSCert(t *testing.T, key *rsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{Country: []string{"US"}, Province: []string{"Washington State"},
			Locality: []string{"Seattle"}, Organization: []string{"Amazon Web Services LLC"}},
		NotBefore:             time.Date(2015, time.August, 14, 8, 59, 12, 0, time.UTC),
		NotAfter:              time.Date(2195, time.January, 17, 8, 59, 12, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// provPKCS7 is a PKCS#7 SignedData over content by cert's key, carrying
// cert, SHA-256.
func provPKCS7(t *testing.T, content []byte, cert *x509.Certificate, key crypto.PrivateKey) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// provIMDSv2 is the EC2 instance metadata service with IMDSv2 required.
type provIMDSv2 struct {
	srv *httptest.Server

	mu       sync.Mutex
	doc      []byte
	sig      []byte // the rsa2048 PKCS#7, DER
	sessions map[string]bool
	puts     int
	gets     int
	refused  int // requests without a valid session token
}

func provNewIMDSv2(t *testing.T) *provIMDSv2 {
	t.Helper()
	m := &provIMDSv2{sessions: map[string]bool{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

// set makes the service serve doc and its signature.
func (m *provIMDSv2) set(doc, sig []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.doc, m.sig = doc, sig
}

func (m *provIMDSv2) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			// IMDSv2: the token endpoint only takes PUT.
			http.Error(w, "", http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
		m.puts++
		var b [32]byte
		_, _ = rand.Read(b[:])
		tok := base64.StdEncoding.EncodeToString(b[:])
		m.sessions[tok] = true
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		_, _ = w.Write([]byte(tok))
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if !m.sessions[r.Header.Get("X-aws-ec2-metadata-token")] {
		m.refused++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/latest/dynamic/instance-identity/document":
		m.gets++
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(m.doc)
	case "/latest/dynamic/instance-identity/rsa2048":
		m.gets++
		// Base64 in 64-column lines, as IMDS serves it.
		s := base64.StdEncoding.EncodeToString(m.sig)
		var b strings.Builder
		for len(s) > 64 {
			b.WriteString(s[:64] + "\n")
			s = s[64:]
		}
		b.WriteString(s)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(b.String()))
	default:
		http.NotFound(w, r)
	}
}

func TestProvAWSIIDEnroll(t *testing.T) {
	t.Parallel()
	key := provRSAKey(t)
	cert := provAWSCert(t, key)
	certsFile := filepath.Join(t.TempDir(), "aws-certs.pem")
	writeFile(t, certsFile, append([]byte("# The test \"AWS\" certificate for us-east-1.\n"),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Region": provAWSRegion, "Use": "rsa2048"}, Bytes: cert.Raw})...))
	imds := provNewIMDSv2(t)
	ca := newCA(t, caOptions{})
	provAddProvisioners(ca, map[string]any{"type": "aws-iid", "name": "aws", "accounts": []string{provAWSAccount},
		"regions": []string{provAWSRegion}, "certificates_file": certsFile, "max_instance_age": "1h"})
	ca.start()
	enroll := func(t *testing.T, out string) result {
		t.Helper()
		return provEnroll(t, ca, out, "--aws-iid", "--metadata-url", imds.srv.URL)
	}

	const instance = "i-0123456789abcdef0"
	doc := provAWSDoc(provAWSAccount, instance, time.Now().Add(-2*time.Minute))
	imds.set(doc, provPKCS7(t, doc, cert, key))
	out := filepath.Join(t.TempDir(), "creds")
	provEnrolled(t, ca, enroll(t, out), out, "spiffe://example.org/aws/"+provAWSAccount+"/"+provAWSRegion+"/"+instance)
	imds.mu.Lock()
	puts, gets, refused := imds.puts, imds.gets, imds.refused
	imds.mu.Unlock()
	if puts != 1 || gets != 2 || refused != 0 {
		t.Errorf("IMDS saw %d token PUTs, %d GETs with a token, %d requests without; want 1, 2, 0 (IMDSv2)", puts, gets, refused)
	}

	t.Run("second enrollment of the instance (TOFU)", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "creds")
		provRefused(t, enroll(t, out), out)
		provWantAuditRefusal(t, ca, "aws", "error=unauthorized", "replay")
		if got := ca.certs("spiffe://example.org/aws/" + provAWSAccount + "/" + provAWSRegion + "/" + instance); len(got) != 1 {
			t.Errorf("want the first certificate only, got %+v", got)
		}
	})

	t.Run("operator clears the TOFU entry, the instance enrolls again", func(t *testing.T) {
		key := "aws-iid:aws:" + provAWSAccount + ":" + instance
		r := mustRun(t, "tofu", "clear", "--dir", ca.Dir, "--key", key)
		if !strings.Contains(r.stdout, "Cleared "+key) {
			t.Fatalf("tofu clear printed %q", r.stdout)
		}
		out := filepath.Join(t.TempDir(), "creds")
		provEnrolled(t, ca, enroll(t, out), out, "spiffe://example.org/aws/"+provAWSAccount+"/"+provAWSRegion+"/"+instance)
		if r := runCLI(t, "tofu", "clear", "--dir", ca.Dir, "--key", "aws-iid:aws:nope"); r.code != 1 {
			t.Fatalf("clearing an unknown key: exit %d, want 1\n%s", r.code, r)
		}
	})

	t.Run("account outside the allow-list", func(t *testing.T) {
		doc := provAWSDoc("210987654321", "i-0aaaaaaaaaaaaaaa1", time.Now().Add(-time.Minute))
		imds.set(doc, provPKCS7(t, doc, cert, key))
		out := filepath.Join(t.TempDir(), "creds")
		provRefused(t, enroll(t, out), out)
		provWantAuditRefusal(t, ca, "aws", "error=unauthorized", "account", "210987654321", "not allowed")
	})

	t.Run("attacker's key and certificate embedded", func(t *testing.T) {
		const fresh = "i-0bbbbbbbbbbbbbbb2"
		doc := provAWSDoc(provAWSAccount, fresh, time.Now().Add(-time.Minute))
		// Same subject as AWS's; only the configured certificate counts.
		attackerKey := provRSAKey(t)
		imds.set(doc, provPKCS7(t, doc, provAWSCert(t, attackerKey), attackerKey))
		out := filepath.Join(t.TempDir(), "creds")
		provRefused(t, enroll(t, out), out)
		provWantAuditRefusal(t, ca, "aws", "error=unauthorized", "rsa2048")
		// The same instance with AWS's signature enrolls: the refusal
		// was the signature.
		imds.set(doc, provPKCS7(t, doc, cert, key))
		out2 := filepath.Join(t.TempDir(), "creds")
		provEnrolled(t, ca, enroll(t, out2), out2, "spiffe://example.org/aws/"+provAWSAccount+"/"+provAWSRegion+"/"+fresh)
	})
}

// ---------------------------------------------------------------------
// 3. enroll --azure-imds.

const provAzureSubscription = "8d10da13-8125-4ba9-a717-bf7490507b3d"

// provAzureChain is a root → intermediate → metadata.azure.com signer,
// shaped like Azure's (Microsoft TLS RSA Root G2 → Microsoft TLS G2 RSA
// CA OCSP 02 → metadata.azure.com).
type provAzureChain struct {
	root, inter, signer *x509.Certificate
	signerKey           *rsa.PrivateKey
}

func provNewAzureChain(t *testing.T) *provAzureChain {
	t.Helper()
	from, to := time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour)
	mk := func(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
		s, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = s, from, to
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootKey, interKey, signerKey := provRSAKey(t), provRSAKey(t), provRSAKey(t)
	ms := func(cn string) pkix.Name {
		return pkix.Name{Country: []string{"US"}, Organization: []string{"Microsoft Corporation"}, CommonName: cn}
	}
	root := mk(&x509.Certificate{Subject: ms("Microsoft TLS RSA Root G2"),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true},
		nil, rootKey.Public(), rootKey)
	inter := mk(&x509.Certificate{Subject: ms("Microsoft TLS G2 RSA CA OCSP 02"),
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true},
		root, interKey.Public(), rootKey)
	signer := mk(&x509.Certificate{
		Subject: pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Locality: []string{"Redmond"},
			Organization: []string{"Microsoft Corporation"}, CommonName: "metadata.azure.com"},
		DNSNames:    []string{"metadata.azure.com"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		inter, signerKey.Public(), interKey)
	return &provAzureChain{root: root, inter: inter, signer: signer, signerKey: signerKey}
}

// provAzureDoc is attested-data content in Azure's format: compact JSON,
// Azure's key order, times as "MM/dd/yy HH:mm:ss -0000".
func provAzureDoc(nonce, vmID string, created time.Time) []byte {
	const layout = "01/02/06 15:04:05 -0000"
	return fmt.Appendf(nil, `{"licenseType":"","nonce":%q,"plan":{"name":"","product":"","publisher":""},"sku":"22_04-lts-gen2",`+
		`"subscriptionId":%q,"timeStamp":{"createdOn":%q,"expiresOn":%q},"vmId":%q}`,
		nonce, provAzureSubscription, created.UTC().Format(layout), created.Add(6*time.Hour).UTC().Format(layout), vmID)
}

// provAzureIMDS is the Azure instance metadata service's attested-data
// endpoint for one VM.
type provAzureIMDS struct {
	srv   *httptest.Server
	chain *provAzureChain

	mu     sync.Mutex
	vmID   string
	nonces []string // as asked, in order
}

func provNewAzureIMDS(t *testing.T, chain *provAzureChain, vmID string) *provAzureIMDS {
	t.Helper()
	m := &provAzureIMDS{chain: chain, vmID: vmID}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *provAzureIMDS) setVM(vmID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vmID = vmID
}

// sign is what the signer makes over content, base64.
func (m *provAzureIMDS) sign(content []byte) (string, error) {
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return "", err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(m.chain.signer, m.chain.signerKey, pkcs7.SignerInfoConfig{}); err != nil {
		return "", err
	}
	der, err := sd.Finish()
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

func (m *provAzureIMDS) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case r.URL.Path != "/metadata/attested/document":
		http.NotFound(w, r)
		return
	case r.Header.Get("Metadata") != "true" || r.Header.Get("X-Forwarded-For") != "":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"Bad request. Required metadata header not specified"}`))
		return
	case q.Get("api-version") == "":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"Bad request. api-version was not specified in the request"}`))
		return
	}
	m.mu.Lock()
	nonce, vm := q.Get("nonce"), m.vmID
	m.nonces = append(m.nonces, nonce)
	m.mu.Unlock()
	sig, err := m.sign(provAzureDoc(nonce, vm, time.Now()))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(map[string]string{"encoding": "pkcs7", "signature": sig})
}

func TestProvAzureIMDSEnroll(t *testing.T) {
	t.Parallel()
	chain := provNewAzureChain(t)
	dir := t.TempDir()
	rootsFile, intersFile := filepath.Join(dir, "roots.pem"), filepath.Join(dir, "intermediates.pem")
	writeFile(t, rootsFile, certPEM(chain.root))
	writeFile(t, intersFile, certPEM(chain.inter))
	vmA, vmB := provUUID(), provUUID()
	imds := provNewAzureIMDS(t, chain, vmA)
	ca := newCA(t, caOptions{})
	provAddProvisioners(ca, map[string]any{"type": "azure-imds", "name": "azure-imds", "subscriptions": []string{provAzureSubscription},
		"roots_file": rootsFile, "intermediates_file": intersFile, "nonce_ttl": "2m"})
	ca.start()
	enroll := func(t *testing.T, out string) result {
		t.Helper()
		return provEnroll(t, ca, out, "--azure-imds", "--metadata-url", imds.srv.URL)
	}
	idOf := func(vm string) string { return "spiffe://example.org/azure/" + provAzureSubscription + "/" + vm }

	out := filepath.Join(t.TempDir(), "creds")
	provEnrolled(t, ca, enroll(t, out), out, idOf(vmA))
	imds.mu.Lock()
	nonces := slices.Clone(imds.nonces)
	imds.mu.Unlock()
	if len(nonces) != 1 || len(nonces[0]) != 10 || strings.Trim(nonces[0], "0123456789") != "" {
		t.Fatalf("IMDS was asked for nonces %q, want one challenge nonce of 10 digits", nonces)
	}
	used := nonces[0]
	token := func(nonce string, content []byte) string {
		sig, err := imds.sign(content)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]string{"nonce": nonce, "signature": sig})
		return string(b)
	}

	t.Run("nonce reuse", func(t *testing.T) {
		// Genuine attested data of a VM never enrolled, but for the
		// nonce VM A's enrollment consumed.
		wantError(t, provSign(t, ca, "azure-imds", token(used, provAzureDoc(used, vmB, time.Now()))), http.StatusUnauthorized, "unauthorized")
		provWantAuditRefusal(t, ca, "azure-imds", "error=unauthorized", "nonce")
	})

	t.Run("nonce of another challenge", func(t *testing.T) {
		hc := ca.client(nil)
		defer hc.CloseIdleConnections()
		var chs [2]wire.ChallengeResponse
		for i := range chs {
			r := postJSON(t, hc, ca.URL+"/v1/challenge", map[string]string{"provisioner": "azure-imds"})
			if r.status != http.StatusCreated {
				t.Fatalf("POST /v1/challenge: %d %s", r.status, r.body)
			}
			if err := json.Unmarshal(r.body, &chs[i]); err != nil || chs[i].Nonce == "" || !chs[i].ExpiresAt.After(time.Now()) {
				t.Fatalf("POST /v1/challenge: %v %s", err, r.body)
			}
		}
		// The document was made for the second challenge, the token
		// claims the first.
		wantError(t, provSign(t, ca, "azure-imds", token(chs[0].Nonce, provAzureDoc(chs[1].Nonce, vmB, time.Now()))), http.StatusUnauthorized, "unauthorized")
		provWantAuditRefusal(t, ca, "azure-imds", "error=unauthorized", "nonce", chs[1].Nonce)
	})

	t.Run("second enrollment of the VM (TOFU)", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "creds")
		provRefused(t, enroll(t, out), out)
		provWantAuditRefusal(t, ca, "azure-imds", "error=unauthorized", "replay")
		if got := ca.certs(idOf(vmA)); len(got) != 1 {
			t.Errorf("want VM A's first certificate only, got %+v", got)
		}
	})

	// VM B, refused above for its nonces only, enrolls with a fresh one.
	imds.setVM(vmB)
	out2 := filepath.Join(t.TempDir(), "creds")
	provEnrolled(t, ca, enroll(t, out2), out2, idOf(vmB))
}

// ---------------------------------------------------------------------
// 4. spiffe_id_template.

func TestProvSPIFFEIDTemplate(t *testing.T) {
	t.Parallel()
	cl := provNewCluster(t)
	ca := newCA(t, caOptions{})
	provAddProvisioners(ca,
		cl.entry("k8s-pod", map[string]any{"spiffe_id_template": "spiffe://{{.trust_domain}}/ns/{{.namespace}}/pod/{{.pod_name}}"}),
		cl.entry("k8s-evil", map[string]any{"spiffe_id_template": "spiffe://evil.org/{{.namespace}}"}),
		cl.entry("k8s-node", map[string]any{"spiffe_id_template": "spiffe://{{.trust_domain}}/node/{{.node_name}}/sa/{{.service_account}}"}),
	)
	ca.start()
	pod := provNewPod("apps", "web")
	tok := cl.token(t, pod)

	t.Run("custom template", func(t *testing.T) {
		_, leaf := wantIssued(t, provSign(t, ca, "k8s-pod", tok))
		if got, want := spiffeIDOf(t, leaf), "spiffe://example.org/ns/apps/pod/"+pod.name; got != want {
			t.Errorf("SPIFFE ID %s, want %s", got, want)
		}
		_, leaf = wantIssued(t, provSign(t, ca, "k8s-node", tok))
		if got, want := spiffeIDOf(t, leaf), "spiffe://example.org/node/node-1/sa/web"; got != want {
			t.Errorf("SPIFFE ID %s, want %s", got, want)
		}
	})

	t.Run("outside the trust domain", func(t *testing.T) {
		wantError(t, provSign(t, ca, "k8s-evil", tok), http.StatusForbidden, "identity_not_allowed")
		provWantAuditRefusal(t, ca, "k8s-evil", "error=identity_not_allowed", "evil.org")
		if got := ca.certs("spiffe://evil.org/apps"); len(got) != 0 {
			t.Errorf("certificates issued outside the trust domain: %+v", got)
		}
	})

	t.Run("missing claim", func(t *testing.T) {
		// A token from a cluster older than 1.30 has no node.
		claims := pod.claims(time.Now())
		delete(claims["kubernetes.io"].(map[string]any), "node")
		wantError(t, provSign(t, ca, "k8s-node", cl.sign(t, claims)), http.StatusForbidden, "identity_not_allowed")
		provWantAuditRefusal(t, ca, "k8s-node", "error=identity_not_allowed", "node_name")
	})
}

// ---------------------------------------------------------------------
// 5. SIGHUP reloads the provisioners without dropping requests.

func TestProvSIGHUPReload(t *testing.T) {
	t.Parallel()
	cl := provNewCluster(t)
	ca := newCA(t, caOptions{})
	ca.start()
	hup := func() { ca.proc.signal(t, syscall.SIGHUP) }

	// Load: workers issue with join tokens until told to stop, paced so
	// that the tokens last well beyond the reloads.
	r := mustRun(t, "token", "create", "--dir", ca.Dir, "--spiffe-id", "spiffe://example.org/load", "--count", "3000")
	tokens := strings.Fields(r.stdout)
	if len(tokens) != 3000 {
		t.Fatalf("token create --count 3000 printed %d tokens", len(tokens))
	}
	pool := make(chan string, len(tokens))
	for _, tok := range tokens {
		pool <- tok
	}
	close(pool)
	var (
		issued, failed atomic.Int64
		errMu          sync.Mutex
		errs           []string
		wg             sync.WaitGroup
	)
	stop := make(chan struct{})
	hc := ca.client(nil)
	defer hc.CloseIdleConnections()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var tok string
				select {
				case <-stop:
					return
				case next, ok := <-pool:
					if !ok {
						return
					}
					tok = next
				}
				err := func() error {
					key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
					if err != nil {
						return err
					}
					der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
					if err != nil {
						return err
					}
					b, _ := json.Marshal(signBody("join", tok, pemCSR(der), ""))
					resp, err := tryDo(hc, http.MethodPost, ca.URL+"/v1/sign", "application/json", strings.NewReader(string(b)))
					if err != nil {
						return err
					}
					if resp.status != http.StatusCreated {
						return fmt.Errorf("status %d: %s", resp.status, resp.body)
					}
					return nil
				}()
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					errs = append(errs, err.Error())
					errMu.Unlock()
				} else {
					issued.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	eventually(t, 20*time.Second, 10*time.Millisecond, "the load to start", func() bool { return issued.Load()+failed.Load() >= 20 })

	// Add a k8s-sa provisioner and reload.
	provAddProvisioners(ca, cl.entry("k8s", nil))
	atFirstHUP := issued.Load()
	hup()
	eventually(t, 10*time.Second, 10*time.Millisecond, "the reload to be logged", func() bool {
		return provLogLine(ca.proc.log(), "reloaded provisioners", "count=2")
	})
	_, leaf := wantIssued(t, provSign(t, ca, "k8s", cl.token(t, provNewPod("apps", "web"))))
	if got := spiffeIDOf(t, leaf); got != "spiffe://example.org/ns/apps/sa/web" {
		t.Errorf("the reloaded k8s provisioner issued %s", got)
	}

	// A provisioner with an unknown field: the reload fails, naming it,
	// and the running set stays.
	provAddProvisioners(ca, cl.entry("k8s-bad", map[string]any{"jwks_path": "/etc/agentca/jwks.json"}))
	hup()
	eventually(t, 10*time.Second, 10*time.Millisecond, "the failed reload to be logged", func() bool {
		return provLogLine(ca.proc.log(), "reload failed", "provisioners[2]", "jwks_path")
	})
	// An unknown top-level field: likewise.
	ca.editConfig(func(cfg map[string]any) {
		list := cfg["provisioners"].([]any)
		cfg["provisioners"] = list[:2]
		cfg["listen_extra"] = "0.0.0.0:9999"
	})
	hup()
	eventually(t, 10*time.Second, 10*time.Millisecond, "the second failed reload to be logged", func() bool {
		return provLogLine(ca.proc.log(), "reload failed", "listen_extra")
	})
	if n := provCountLines(ca.proc.log(), "reloaded provisioners"); n != 1 {
		t.Errorf("%d successful reloads logged, want 1", n)
	}
	_, leaf = wantIssued(t, provSign(t, ca, "k8s", cl.token(t, provNewPod("apps", "api"))))
	if got := spiffeIDOf(t, leaf); got != "spiffe://example.org/ns/apps/sa/api" {
		t.Errorf("the k8s provisioner issued %s after the failed reloads", got)
	}
	wantError(t, provSign(t, ca, "k8s-bad", cl.token(t, provNewPod("apps", "web"))), http.StatusBadRequest, "unknown_provisioner")
	afterReloads := issued.Load()

	// Let the load run past the reloads, then stop it.
	eventually(t, 20*time.Second, 10*time.Millisecond, "more issuance after the reloads", func() bool { return issued.Load() >= afterReloads+10 })
	stopLoad()
	if len(pool) == 0 {
		t.Errorf("the join tokens ran out during the test: the load did not cover the reloads")
	}
	if afterReloads <= atFirstHUP {
		t.Errorf("no issuance between the first SIGHUP (%d issued) and the end of the reloads (%d)", atFirstHUP, afterReloads)
	}
	if n := failed.Load(); n != 0 {
		errMu.Lock()
		t.Errorf("%d of %d requests failed across the reloads; first: %s", n, n+issued.Load(), errs[0])
		errMu.Unlock()
	}
	t.Logf("%d join-token certificates issued across three reloads", issued.Load())
	if ca.proc.exited() {
		t.Errorf("the daemon exited during the reloads:\n%s", ca.proc.log())
	}
}

// TestProvServeBadProvisioner: serve refuses a k8s-sa provisioner without
// its audience, naming the provisioner and the field in one line.
func TestProvServeBadProvisioner(t *testing.T) {
	t.Parallel()
	cl := provNewCluster(t)
	ca := newCA(t, caOptions{})
	entry := cl.entry("k8s", nil)
	delete(entry, "audience")
	provAddProvisioners(ca, entry)
	r := runCLI(t, "serve", "--dir", ca.Dir)
	if r.code != 1 {
		t.Errorf("serve with a k8s-sa provisioner without audience: want exit 1:\n%s", r)
	}
	oneLine(t, r)
	for _, want := range []string{"provisioners[1]", "audience"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("serve's error does not name %q: %q", want, r.stderr)
		}
	}
}
