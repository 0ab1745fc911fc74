package k8ssa_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/agentca/agentca/provisioners"
	jt "github.com/agentca/agentca/provisioners/internal/jwtverify/jwtverifytest"
	"github.com/agentca/agentca/provisioners/k8ssa"
)

const (
	issuer = "https://kubernetes.default.svc.cluster.local"
	aud    = "agentca"
	podUID = "5f0c1b3e-8a2d-4c49-9b7e-2d6a1c3f4e50"
	saUID  = "0e7a3c52-6b1d-4f08-a9c4-7d2e5b8f1a36"
	bearer = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImNhIn0.the-ca-s-own-token.sig"
)

// podToken is a projected service-account token's claims, exactly as the
// API server writes them (Kubernetes 1.30+, with the node and jti).
func podToken(now time.Time, ns, sa, pod string) map[string]any {
	return map[string]any{
		"aud": []string{aud},
		"exp": now.Add(600 * time.Second).Unix(),
		"iat": now.Unix(),
		"iss": issuer,
		"jti": "9c2b7f1e-4d3a-4b6c-8e5f-1a2b3c4d5e6f",
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"node":           map[string]any{"name": "node-1", "uid": "3d1f6a2b-7c4e-4a9d-b8e1-6f2c5a3d7b90"},
			"pod":            map[string]any{"name": pod, "uid": podUID},
			"serviceaccount": map[string]any{"name": sa, "uid": saUID},
		},
		"nbf": now.Unix(),
		"sub": "system:serviceaccount:" + ns + ":" + sa,
	}
}

// set returns a copy of m with path (dot-separated, "kubernetes.io" is one
// key) set to v, or deleted when v is nil.
func set(m map[string]any, path string, v any) map[string]any {
	keys := strings.Split(strings.ReplaceAll(path, "kubernetes.io", "kubernetes\x00io"), ".")
	for i := range keys {
		keys[i] = strings.ReplaceAll(keys[i], "\x00", ".")
	}
	return jt.Set(m, v, keys...)
}

// cluster is a service-account signing key.
type cluster struct {
	key  *jt.Key
	jwks []byte
}

func newCluster(t testing.TB) *cluster {
	k := jt.RSA(t, "")
	k.KID = jt.K8sKID(t, k.Signer.Public())
	return &cluster{key: k, jwks: jt.JWKS(k.JWK(false))}
}

// sign signs claims with the cluster key, header {"alg","kid"} as
// Kubernetes writes it.
func (c *cluster) sign(t testing.TB, claims any) string { return c.key.Sign(t, nil, claims) }

func mustParse(t testing.TB, js string) *k8ssa.Config {
	t.Helper()
	cfg, err := k8ssa.ParseConfig(json.RawMessage(js))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newProv(t testing.TB, cfg *k8ssa.Config, opts k8ssa.Options) *k8ssa.Provisioner {
	t.Helper()
	p, err := k8ssa.New("k8s", cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func refused(t *testing.T, id *provisioners.Identity, err error, want string) {
	t.Helper()
	if id != nil || !errors.Is(err, provisioners.ErrUnauthorized) {
		t.Fatalf("Attest = %+v, %v; want ErrUnauthorized", id, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v; want it to say %q", err, want)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"offline file", `{"issuer":"https://k","audience":"agentca","jwks_file":"/etc/jwks.json","namespaces":["prod"],"service_accounts":["prod/web"]}`, ""},
		{"offline url", `{"issuer":"kubernetes/serviceaccount","audience":"agentca","jwks_url":"https://k/openid/v1/jwks"}`, ""},
		{"discovery", `{"issuer":"https://oidc.eks.eu-west-1.amazonaws.com/id/ABC","audience":"agentca"}`, ""},
		{"tokenreview", `{"issuer":"https://k","audience":"agentca","api_server":"https://kubernetes.default.svc","api_ca_file":"/ca.crt","api_token_file":"/token"}`, ""},
		{"unknown field", `{"issuer":"https://k","audience":"a","jwks_file":"/f","namespace":["x"]}`, `"namespace": unknown field`},
		{"field case", `{"Issuer":"https://k","audience":"a"}`, `"Issuer": unknown field`},
		{"missing issuer", `{"audience":"a","jwks_file":"/f"}`, "issuer: required"},
		{"missing audience", `{"issuer":"https://k","jwks_file":"/f"}`, "audience: required"},
		{"empty", ``, "issuer: required"},
		{"audience spaces", `{"issuer":"https://k","audience":" a","jwks_file":"/f"}`, "audience: leading or trailing space"},
		{"both jwks", `{"issuer":"https://k","audience":"a","jwks_file":"/f","jwks_url":"https://k/jwks"}`, "jwks_file: give jwks_file or jwks_url, not both"},
		{"http jwks", `{"issuer":"https://k","audience":"a","jwks_url":"http://k/jwks"}`, "jwks_url: must be an https URL"},
		{"bad url", `{"issuer":"https://k","audience":"a","jwks_url":"https://exa mple/"}`, "jwks_url: not a URL"},
		{"discovery needs https issuer", `{"issuer":"kubernetes/serviceaccount","audience":"a"}`, "issuer: keys are discovered"},
		{"http api", `{"issuer":"https://k","audience":"a","api_server":"http://k","api_token_file":"/t"}`, "api_server: must be an https URL"},
		{"api query", `{"issuer":"https://k","audience":"a","api_server":"https://k?x=1","api_token_file":"/t"}`, "api_server: must not have a query"},
		{"api without token", `{"issuer":"https://k","audience":"a","api_server":"https://k"}`, "api_token_file: required with api_server"},
		{"ca without api", `{"issuer":"https://k","audience":"a","jwks_file":"/f","api_ca_file":"/ca"}`, "api_ca_file: needs api_server"},
		{"token without api", `{"issuer":"https://k","audience":"a","jwks_file":"/f","api_token_file":"/t"}`, "api_token_file: needs api_server"},
		{"bad namespace", `{"issuer":"https://k","audience":"a","jwks_file":"/f","namespaces":["Prod"]}`, "namespaces[0]:"},
		{"bad sa", `{"issuer":"https://k","audience":"a","jwks_file":"/f","service_accounts":["web"]}`, "service_accounts[0]:"},
		{"bad sa ns", `{"issuer":"https://k","audience":"a","jwks_file":"/f","service_accounts":["a/b","x_y/web"]}`, "service_accounts[1]:"},
		{"wrong type", `{"issuer":"https://k","audience":"a","jwks_file":"/f","namespaces":"prod"}`, "namespaces: want []string"},
		{"duplicate", `{"issuer":"https://k","audience":"a","audience":"b","jwks_file":"/f"}`, "audience: given twice"},
		{"not an object", `["x"]`, "want a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := k8ssa.ParseConfig(json.RawMessage(tt.in))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v; want %q", err, tt.want)
			case tt.want != "" && !strings.HasPrefix(err.Error(), "k8ssa: "):
				t.Fatalf("err = %v; want the package prefix", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	if _, err := k8ssa.New("", &k8ssa.Config{}, k8ssa.Options{}); err == nil {
		t.Error("no name accepted")
	}
	cfg := mustParse(t, `{"issuer":"https://k","audience":"a","jwks_file":"/nonexistent"}`)
	if _, err := k8ssa.New("k", cfg, k8ssa.Options{}); err == nil || !strings.Contains(err.Error(), "jwks_file") {
		t.Errorf("missing jwks_file: %v", err)
	}
	tokenFile := jt.WriteFile(t, "token", []byte(bearer))
	for _, c := range []struct{ ca, token, want string }{
		{"/nonexistent", tokenFile, "api_ca_file"},
		{jt.WriteFile(t, "ca.pem", []byte("not pem")), tokenFile, "api_ca_file"},
		{"", "/nonexistent", "api_token_file"},
		{"", jt.WriteFile(t, "empty", []byte("\n")), "api_token_file"},
	} {
		cfg := &k8ssa.Config{Issuer: issuer, Audience: aud, APIServer: "https://k", APICAFile: c.ca, APITokenFile: c.token}
		if _, err := k8ssa.New("k", cfg, k8ssa.Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v", c, err)
		}
	}
}

// TestAttestOffline: the offline mode's acceptance and every refusal.
func TestAttestOffline(t *testing.T) {
	clk := jt.NewClock()
	cl := newCluster(t)
	jwksFile := jt.WriteFile(t, "jwks.json", cl.jwks)
	cfg := mustParse(t, `{"issuer":"`+issuer+`","audience":"agentca","jwks_file":"`+jwksFile+`",
		"namespaces":["prod","dev"],"service_accounts":["prod/web","dev/web","prod/batch"]}`)
	p := newProv(t, cfg, k8ssa.Options{Now: clk.Now})
	now := clk.Now()
	good := podToken(now, "prod", "web", "web-7d4b9c6f5-x2x9k")
	stranger := jt.RSA(t, "")
	stranger.KID = jt.K8sKID(t, stranger.Signer.Public())
	sameKid := jt.RSA(t, cl.key.KID)

	tests := []struct {
		name, token, want string
	}{
		{"bad signature", jt.Tamper(t, cl.sign(t, good), set(good, "kubernetes.io.namespace", "dev")), "bad signature"},
		{"another cluster's key, same kid", sameKid.Sign(t, nil, good), "bad signature"},
		{"unknown kid", stranger.Sign(t, nil, good), "unknown kid"},
		{"alg none", jt.Unsigned(map[string]any{"alg": "none", "kid": cl.key.KID}, good), `"none" not allowed`},
		{"HS256 keyed with the public key", jt.HS256(t, cl.key.PublicPEM(t), cl.key.KID, good), `"HS256" not allowed`},
		{"expired", cl.sign(t, set(set(set(good, "iat", now.Add(-11*time.Minute).Unix()), "nbf", nil), "exp", now.Add(-61*time.Second).Unix())), "expired"},
		{"nbf in the future", cl.sign(t, set(good, "nbf", now.Add(61*time.Second).Unix())), "not valid before"},
		{"iat in the future", cl.sign(t, set(set(good, "iat", now.Add(5*time.Minute).Unix()), "nbf", nil)), "issued in the future"},
		{"lifetime over a day", cl.sign(t, set(good, "exp", now.Add(25*time.Hour).Unix())), "lifetime"},
		{"wrong aud", cl.sign(t, set(good, "aud", []string{"https://kubernetes.default.svc.cluster.local"})), "audience"},
		{"wrong iss", cl.sign(t, set(good, "iss", "https://other-cluster")), "issuer"},
		{"namespace not allowed", cl.sign(t, podToken(now, "kube-system", "web", "p")), `namespace "kube-system" not allowed`},
		{"sa not allowed", cl.sign(t, podToken(now, "dev", "batch", "p")), "service account dev/batch not allowed"},
		{"no namespace", cl.sign(t, set(good, "kubernetes.io.namespace", nil)), "kubernetes.io.namespace: missing"},
		{"no pod (not pod-bound)", cl.sign(t, set(good, "kubernetes.io.pod", nil)), "kubernetes.io.pod: missing"},
		{"no pod uid", cl.sign(t, set(good, "kubernetes.io.pod.uid", nil)), "kubernetes.io.pod.uid: missing"},
		{"no sa name", cl.sign(t, set(good, "kubernetes.io.serviceaccount.name", nil)), "serviceaccount.name: missing"},
		{"no sa uid", cl.sign(t, set(good, "kubernetes.io.serviceaccount.uid", nil)), "serviceaccount.uid: missing"},
		{"flat legacy claims", cl.sign(t, set(good, "kubernetes.io", nil)), "kubernetes.io: missing"},
		{"namespace not a string", cl.sign(t, set(good, "kubernetes.io.namespace", 7)), "not a string"},
		{"malformed namespace", cl.sign(t, set(set(good, "kubernetes.io.namespace", "prod/../x"), "sub", "system:serviceaccount:prod/../x:web")), "malformed"},
		{"malformed pod uid", cl.sign(t, set(good, "kubernetes.io.pod.uid", "x")), "uid malformed"},
		{"sub disagrees", cl.sign(t, set(good, "sub", "system:serviceaccount:prod:admin")), "sub"},
		{"no exp", cl.sign(t, set(good, "exp", nil)), "no exp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := p.Attest(context.Background(), tt.token)
			refused(t, id, err, tt.want)
		})
	}

	t.Run("accepted", func(t *testing.T) {
		for _, tok := range []string{
			cl.sign(t, good),
			cl.sign(t, set(good, "kubernetes.io.node", nil)), // before Kubernetes 1.30
			cl.sign(t, set(good, "jti", nil)),                // jti is only required with single_use
		} {
			id, err := p.Attest(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			if id.SPIFFEID != "" || len(id.Once) != 0 || id.JoinToken != nil {
				t.Fatalf("identity = %+v", id)
			}
			for k, v := range map[string]string{"namespace": "prod", "service_account": "web", "pod_name": "web-7d4b9c6f5-x2x9k",
				"pod_uid": podUID, "service_account_uid": saUID, "issuer": issuer} {
				if id.Claims[k] != v {
					t.Errorf("claim %s = %q, want %q", k, id.Claims[k], v)
				}
			}
		}
		id, _ := p.Attest(context.Background(), cl.sign(t, good))
		if id.Claims["node_name"] != "node-1" {
			t.Errorf("node_name = %q", id.Claims["node_name"])
		}
		if got := jt.Issue(t, k8ssa.DefaultTemplate, id); got != "spiffe://example.org/ns/prod/sa/web" {
			t.Errorf("default template gave %s", got)
		}
	})
}

func TestSingleUse(t *testing.T) {
	clk := jt.NewClock()
	cl := newCluster(t)
	cfg := mustParse(t, `{"issuer":"`+issuer+`","audience":"agentca","jwks_file":"`+jt.WriteFile(t, "jwks", cl.jwks)+`"}`)
	p := newProv(t, cfg, k8ssa.Options{Now: clk.Now, SingleUse: true})
	good := podToken(clk.Now(), "prod", "web", "web-0")
	id, err := p.Attest(context.Background(), cl.sign(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if want := "jti:k8s:9c2b7f1e-4d3a-4b6c-8e5f-1a2b3c4d5e6f"; len(id.Once) != 1 || id.Once[0] != want {
		t.Fatalf("Once = %q, want [%q]", id.Once, want)
	}
	// The store refuses the second issuance with the same jti.
	jt.Issue(t, k8ssa.DefaultTemplate, id)

	id, err = p.Attest(context.Background(), cl.sign(t, set(good, "jti", nil)))
	refused(t, id, err, "no usable jti")
}

// TestUnknownKidRefetch: an unknown kid reloads the JWKS URL, at most once
// per 10 s, and finds a rotated key.
func TestUnknownKidRefetch(t *testing.T) {
	clk := jt.NewClock()
	cl, next := newCluster(t), newCluster(t)
	srv := jt.NewServer(t, cl.jwks)
	cfg := mustParse(t, `{"issuer":"`+issuer+`","audience":"agentca","jwks_url":"`+srv.JWKSURL()+`"}`)
	p := newProv(t, cfg, k8ssa.Options{Now: clk.Now, HTTPClient: srv.Client()})
	ctx := context.Background()
	if _, err := p.Attest(ctx, cl.sign(t, podToken(clk.Now(), "a", "b", "c"))); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		id, err := p.Attest(ctx, next.sign(t, podToken(clk.Now(), "a", "b", "c")))
		refused(t, id, err, "unknown kid")
	}
	if n := srv.JWKSFetches.Load(); n != 1 {
		t.Fatalf("JWKS fetches = %d, want 1 (rate-limited)", n)
	}
	srv.SetJWKS(jt.JWKS(cl.key.JWK(false), next.key.JWK(false)))
	clk.Advance(10 * time.Second)
	if _, err := p.Attest(ctx, next.sign(t, podToken(clk.Now(), "a", "b", "c"))); err != nil {
		t.Fatal(err)
	}
	if n := srv.JWKSFetches.Load(); n != 2 {
		t.Fatalf("JWKS fetches = %d, want 2", n)
	}
}

// TestDiscovery: with neither jwks_file nor jwks_url the keys come from
// {issuer}/.well-known/openid-configuration.
func TestDiscovery(t *testing.T) {
	clk := jt.NewClock()
	cl := newCluster(t)
	srv := jt.NewServer(t, cl.jwks)
	cfg := mustParse(t, `{"issuer":"`+srv.URL+`","audience":"agentca"}`)
	p := newProv(t, cfg, k8ssa.Options{Now: clk.Now, HTTPClient: srv.Client()})
	id, err := p.Attest(context.Background(), cl.sign(t, set(podToken(clk.Now(), "prod", "web", "p"), "iss", srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	if id.Claims["issuer"] != srv.URL || srv.DiscoveryFetches.Load() != 1 || srv.JWKSFetches.Load() != 1 {
		t.Fatalf("claims %v, fetches %d/%d", id.Claims, srv.DiscoveryFetches.Load(), srv.JWKSFetches.Load())
	}
}

// fakeAPI is a Kubernetes API server over TLS: TokenReview and pods, with
// bearer-token authentication.
type fakeAPI struct {
	srv     *httptest.Server
	caFile  string
	mu      sync.Mutex
	reviews atomic.Int64
	podGets atomic.Int64
	// authenticated is the review's answer; audiences overrides the
	// echoed audiences; user overrides the username.
	authenticated bool
	audiences     []string
	user          string
	// pods by "ns/name": uid and service account.
	pods map[string][2]string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{authenticated: true, pods: map[string][2]string{}}
	mux := http.NewServeMux()
	authn := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "Bearer "+bearer {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401})
			return false
		}
		return true
	}
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", func(w http.ResponseWriter, r *http.Request) {
		if !authn(w, r) {
			return
		}
		f.reviews.Add(1)
		var req struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Spec       struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.APIVersion != "authentication.k8s.io/v1" ||
			req.Kind != "TokenReview" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad TokenReview", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		status := map[string]any{"user": map[string]any{}}
		tok, err := jose.ParseSigned(req.Spec.Token)
		var c struct {
			Sub string `json:"sub"`
			K   struct {
				Pod struct {
					Name string `json:"name"`
					UID  string `json:"uid"`
				} `json:"pod"`
				SA struct {
					UID string `json:"uid"`
				} `json:"serviceaccount"`
			} `json:"kubernetes.io"`
		}
		if err == nil {
			err = tok.UnsafeClaimsWithoutVerification(&c)
		}
		if f.authenticated && err == nil {
			user := c.Sub
			if f.user != "" {
				user = f.user
			}
			auds := req.Spec.Audiences
			if f.audiences != nil {
				auds = f.audiences
			}
			status = map[string]any{"authenticated": true, "audiences": auds, "user": map[string]any{
				"username": user, "uid": c.K.SA.UID,
				"groups": []string{"system:serviceaccounts", "system:authenticated"},
				"extra": map[string][]string{
					"authentication.kubernetes.io/pod-name": {c.K.Pod.Name},
					"authentication.kubernetes.io/pod-uid":  {c.K.Pod.UID},
				},
			}}
		} else {
			status["error"] = "[invalid bearer token, token lookup failed]"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
			"metadata": map[string]any{"creationTimestamp": nil}, "spec": req.Spec, "status": status})
	})
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", func(w http.ResponseWriter, r *http.Request) {
		if !authn(w, r) {
			return
		}
		f.podGets.Add(1)
		ns, name := r.PathValue("ns"), r.PathValue("name")
		f.mu.Lock()
		p, ok := f.pods[ns+"/"+name]
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
				"message": `pods "` + name + `" not found`, "reason": "NotFound", "code": 404})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"kind": "Pod", "apiVersion": "v1",
			"metadata": map[string]any{"name": name, "namespace": ns, "uid": p[0]},
			"spec":     map[string]any{"serviceAccountName": p[1], "nodeName": "node-1"},
			"status":   map[string]any{"phase": "Running"}})
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	f.caFile = jt.WriteFile(t, "ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}))
	return f
}

func (f *fakeAPI) edit(fn func(f *fakeAPI)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func TestTokenReview(t *testing.T) {
	clk := jt.NewClock()
	cl := newCluster(t)
	api := newFakeAPI(t)
	tokenFile := jt.WriteFile(t, "token", []byte(bearer+"\n"))
	reviewCfg := func(server, caFile, tokenFile string, jwks bool) *k8ssa.Config {
		c := &k8ssa.Config{Issuer: issuer, Audience: aud, APIServer: server, APICAFile: caFile, APITokenFile: tokenFile}
		if jwks {
			c.JWKSFile = jt.WriteFile(t, "jwks", cl.jwks)
		}
		b, _ := json.Marshal(c)
		return mustParse(t, string(b))
	}
	p := newProv(t, reviewCfg(api.srv.URL, api.caFile, tokenFile, false), k8ssa.Options{Now: clk.Now})
	ctx := context.Background()
	good := podToken(clk.Now(), "prod", "web", "web-0")
	api.pods["prod/web-0"] = [2]string{podUID, "web"}

	t.Run("success", func(t *testing.T) {
		id, err := p.Attest(ctx, cl.sign(t, good))
		if err != nil {
			t.Fatal(err)
		}
		if id.Claims["pod_uid"] != podUID || id.Claims["namespace"] != "prod" || id.Claims["service_account"] != "web" {
			t.Fatalf("claims = %v", id.Claims)
		}
		if api.reviews.Load() != 1 || api.podGets.Load() != 1 {
			t.Fatalf("reviews %d, pod GETs %d", api.reviews.Load(), api.podGets.Load())
		}
	})

	// The unknown key is not checked locally without jwks: the API server
	// is the authority, and the local claim checks still apply.
	stranger := newCluster(t)
	tests := []struct {
		name  string
		edit  func(f *fakeAPI)
		token string
		want  string
	}{
		{"authenticated false", func(f *fakeAPI) { f.authenticated = false }, cl.sign(t, good), "not authenticated"},
		{"audience not echoed", func(f *fakeAPI) { f.audiences = []string{"https://kubernetes.default.svc"} }, cl.sign(t, good), "audiences"},
		{"another user", func(f *fakeAPI) { f.user = "system:serviceaccount:prod:admin" }, cl.sign(t, good), "TokenReview: user"},
		{"pod uid mismatch", func(f *fakeAPI) { f.pods["prod/web-0"] = [2]string{"11111111-2222-4333-8444-555555555555", "web"} }, cl.sign(t, good), "has uid"},
		{"pod gone", func(f *fakeAPI) { delete(f.pods, "prod/web-0") }, cl.sign(t, good), "404"},
		{"pod runs as another sa", func(f *fakeAPI) { f.pods["prod/web-0"] = [2]string{podUID, "other"} }, cl.sign(t, good), "runs as"},
		{"alg none never reaches the API", func(*fakeAPI) {}, jt.Unsigned(map[string]any{"alg": "none"}, good), `"none" not allowed`},
		{"wrong aud never reaches the API", func(*fakeAPI) {}, cl.sign(t, set(good, "aud", "x")), "audience"},
		{"expired never reaches the API", func(*fakeAPI) {}, stranger.sign(t, set(set(set(good, "iat", clk.Now().Add(-2*time.Hour).Unix()), "nbf", nil), "exp", clk.Now().Add(-time.Hour).Unix())), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api.edit(func(f *fakeAPI) {
				f.authenticated, f.audiences, f.user = true, nil, ""
				f.pods["prod/web-0"] = [2]string{podUID, "web"}
				tt.edit(f)
			})
			reviews := api.reviews.Load()
			id, err := p.Attest(ctx, tt.token)
			refused(t, id, err, tt.want)
			if strings.Contains(tt.name, "never reaches") && api.reviews.Load() != reviews {
				t.Fatal("the API server was asked")
			}
		})
	}
	api.edit(func(f *fakeAPI) { f.authenticated, f.audiences, f.user = true, nil, "" })

	t.Run("jwks as well", func(t *testing.T) {
		p := newProv(t, reviewCfg(api.srv.URL, api.caFile, tokenFile, true), k8ssa.Options{Now: clk.Now})
		if _, err := p.Attest(ctx, cl.sign(t, good)); err != nil {
			t.Fatal(err)
		}
		id, err := p.Attest(ctx, stranger.sign(t, good))
		refused(t, id, err, "unknown kid")
	})
	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		p := newProv(t, reviewCfg("https://"+addr, api.caFile, tokenFile, false), k8ssa.Options{Now: clk.Now})
		id, err := p.Attest(ctx, cl.sign(t, good))
		refused(t, id, err, "TokenReview")
	})
	t.Run("untrusted API certificate", func(t *testing.T) {
		// (httptest servers all share one certificate: use another.)
		otherCA := jt.WriteFile(t, "other.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: jt.EC(t, "x").Cert.Raw}))
		p := newProv(t, reviewCfg(api.srv.URL, otherCA, tokenFile, false), k8ssa.Options{Now: clk.Now})
		id, err := p.Attest(ctx, cl.sign(t, good))
		refused(t, id, err, "certificate")
	})
	t.Run("wrong bearer token", func(t *testing.T) {
		p := newProv(t, reviewCfg(api.srv.URL, api.caFile, jt.WriteFile(t, "t", []byte("nope")), false), k8ssa.Options{Now: clk.Now})
		id, err := p.Attest(ctx, cl.sign(t, good))
		refused(t, id, err, "refused the CA's credentials")
	})
	t.Run("rotated bearer token is re-read", func(t *testing.T) {
		f := jt.WriteFile(t, "t", []byte("old-token"))
		p := newProv(t, reviewCfg(api.srv.URL, api.caFile, f, false), k8ssa.Options{Now: clk.Now})
		id, err := p.Attest(ctx, cl.sign(t, good))
		refused(t, id, err, "credentials")
		jt.WriteFileAt(t, f, []byte(bearer))
		if _, err := p.Attest(ctx, cl.sign(t, good)); err != nil {
			t.Fatal(err)
		}
	})
}
