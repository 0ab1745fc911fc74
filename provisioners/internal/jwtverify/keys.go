package jwtverify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.step.sm/crypto/jose"
)

const (
	// MaxDocument bounds a JWKS or discovery document.
	MaxDocument = 1 << 20
	// DefaultMinRefresh is the least time between two loads of the keys:
	// a token with an unknown kid triggers at most one load per interval.
	DefaultMinRefresh = 10 * time.Second
	// DefaultMaxAge is how long loaded keys are used before the next
	// token reloads them (the old ones stay in use if that fails).
	DefaultMaxAge = time.Hour
	// minRSABits is the smallest RSA key accepted.
	minRSABits = 2048
	// fetchTimeout bounds one load, whatever the request's deadline.
	fetchTimeout = 15 * time.Second
)

// KeysConfig says where an issuer's keys come from: File, else URL, else
// OIDC discovery of Issuer ({Issuer}/.well-known/openid-configuration →
// jwks_uri). Exactly one of File, URL, Issuer is used.
type KeysConfig struct {
	File   string
	URL    string
	Issuer string
	// HTTPClient fetches URL and discovery; nil means NewHTTPClient().
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger records loads and failures; nil discards.
	Logger *slog.Logger
	// MinRefresh and MaxAge; zero means DefaultMinRefresh and
	// DefaultMaxAge.
	MinRefresh, MaxAge time.Duration
}

// Keys is a cached JSON Web Key Set. Keys are loaded lazily, at the first
// token, and again when a token names an unknown kid (at most once per
// MinRefresh) or the set is older than MaxAge. A failed reload keeps the
// keys already loaded. Only public RSA (≥ 2048 bits) and EC (P-256/384/521)
// signature keys with a kid are kept.
type Keys struct {
	file, url, issuer string
	client            *http.Client
	now               func() time.Time
	log               *slog.Logger
	minRefresh        time.Duration
	maxAge            time.Duration

	load sync.Mutex // one load at a time

	mu        sync.Mutex
	set       *jose.JSONWebKeySet
	loaded    time.Time
	attempted time.Time
}

// NewKeys returns the key source. A File is read now, so that a bad file
// is a configuration error; URLs are fetched at the first token.
func NewKeys(cfg KeysConfig) (*Keys, error) {
	k := &Keys{file: cfg.File, url: cfg.URL, issuer: cfg.Issuer, client: cfg.HTTPClient, now: cfg.Now,
		log: cfg.Logger, minRefresh: cfg.MinRefresh, maxAge: cfg.MaxAge}
	if k.file == "" && k.url == "" && k.issuer == "" {
		return nil, errors.New("jwtverify: a JWKS file, URL or issuer is required")
	}
	if k.client == nil {
		k.client = NewHTTPClient()
	}
	if k.now == nil {
		k.now = time.Now
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	if k.minRefresh <= 0 {
		k.minRefresh = DefaultMinRefresh
	}
	if k.maxAge <= 0 {
		k.maxAge = DefaultMaxAge
	}
	if k.file != "" {
		set, err := k.fetch(context.Background())
		if err != nil {
			return nil, err
		}
		k.set, k.loaded, k.attempted = set, k.now(), k.now()
	}
	return k, nil
}

// NewHTTPClient returns the client used for JWKS and discovery when none
// is given: bounded connect, TLS, header and total times, TLS 1.2 or
// later, redirects only to https URLs.
func NewHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr, Timeout: fetchTimeout, CheckRedirect: HTTPSRedirectsOnly}
}

// HTTPSRedirectsOnly is an http.Client CheckRedirect that follows at most
// three redirects, and only to https URLs.
func HTTPSRedirectsOnly(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a non-https URL %s", req.URL.Redacted())
	}
	return nil
}

// key returns the one key for kid that can verify alg, reloading the set
// when kid is unknown or the set is old.
func (k *Keys) key(ctx context.Context, kid, alg string) (*jose.JSONWebKey, error) {
	k.mu.Lock()
	set, loaded := k.set, k.loaded
	k.mu.Unlock()
	var loadErr error
	known := set != nil && len(set.Key(kid)) > 0
	if !known || k.now().Sub(loaded) >= k.maxAge {
		// A token whose key is known but old does not wait for a load
		// another request is doing: the old key serves meanwhile.
		loadErr = k.reload(ctx, !known)
		k.mu.Lock()
		set = k.set
		k.mu.Unlock()
	}
	if set == nil {
		return nil, refuse("jwks: no keys loaded: %v", loadErr)
	}
	var fit []jose.JSONWebKey
	for _, c := range set.Key(kid) {
		if fits(&c, alg) {
			fit = append(fit, c)
		}
	}
	switch {
	case len(fit) == 1:
		return &fit[0], nil
	case len(fit) > 1:
		return nil, refuse("jwks: %d keys for kid %q", len(fit), trunc(kid))
	case len(set.Key(kid)) > 0:
		return nil, refuse("jwks: key %q cannot verify %s", trunc(kid), alg)
	case errors.Is(loadErr, errTooSoon):
		return nil, refuse("jwks: unknown kid %q (keys reloaded less than %s ago)", trunc(kid), k.minRefresh)
	case loadErr != nil:
		return nil, refuse("jwks: unknown kid %q (reload failed: %v)", trunc(kid), loadErr)
	}
	return nil, refuse("jwks: unknown kid %q", trunc(kid))
}

// fits reports whether key may verify alg: the right key type and curve,
// and the key's own "alg" (if any) equal to alg.
func fits(key *jose.JSONWebKey, alg string) bool {
	if key.Algorithm != "" && key.Algorithm != alg {
		return false
	}
	switch pub := key.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return pub.Curve == elliptic.P256()
		case jose.ES384:
			return pub.Curve == elliptic.P384()
		case jose.ES512:
			return pub.Curve == elliptic.P521()
		}
	}
	return false
}

var errTooSoon = errors.New("reloaded recently")

// reload loads the set unless a load was attempted less than minRefresh
// ago. Concurrent callers wait for one load, unless wait is false: then
// they return at once while another is loading.
func (k *Keys) reload(ctx context.Context, wait bool) error {
	if wait {
		k.load.Lock()
	} else if !k.load.TryLock() {
		return errTooSoon
	}
	defer k.load.Unlock()
	now := k.now()
	k.mu.Lock()
	if !k.attempted.IsZero() && now.Sub(k.attempted) < k.minRefresh {
		k.mu.Unlock()
		return errTooSoon
	}
	k.attempted = now
	k.mu.Unlock()
	// The load is shared: one caller's cancellation must not fail it for
	// the others.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	set, err := k.fetch(ctx)
	if err != nil {
		k.log.Warn("jwks: load failed", "source", k.source(), "err", err)
		return err
	}
	k.mu.Lock()
	k.set, k.loaded = set, now
	k.mu.Unlock()
	k.log.Info("jwks: loaded", "source", k.source(), "keys", len(set.Keys))
	return nil
}

func (k *Keys) source() string {
	switch {
	case k.file != "":
		return k.file
	case k.url != "":
		return k.url
	}
	return k.issuer + discoveryPath
}

const discoveryPath = "/.well-known/openid-configuration"

// fetch reads and parses the set from its source.
func (k *Keys) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	var body []byte
	var err error
	switch {
	case k.file != "":
		body, err = readFileLimited(k.file)
	case k.url != "":
		body, err = k.get(ctx, k.url)
	default:
		var uri string
		if uri, err = k.discover(ctx); err == nil {
			body, err = k.get(ctx, uri)
		}
	}
	if err != nil {
		return nil, err
	}
	return k.parseSet(body)
}

// discover reads the issuer's OpenID configuration and returns its
// jwks_uri. The document must name the same issuer (OpenID Connect
// Discovery 1.0, section 4.3).
func (k *Keys) discover(ctx context.Context) (string, error) {
	body, err := k.get(ctx, strings.TrimSuffix(k.issuer, "/")+discoveryPath)
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery document: %w", err)
	}
	if doc.Issuer != k.issuer {
		return "", fmt.Errorf("discovery document names issuer %q, want %q", trunc(doc.Issuer), k.issuer)
	}
	if err := CheckHTTPSURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery document: jwks_uri: %w", err)
	}
	return doc.JWKSURI, nil
}

// get fetches url, which must answer 200 with at most MaxDocument bytes.
func (k *Keys) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(body) > MaxDocument {
		return nil, fmt.Errorf("GET %s: document larger than %d bytes", url, MaxDocument)
	}
	return body, nil
}

func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, MaxDocument+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxDocument {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxDocument)
	}
	return body, nil
}

// parseSet parses a JWKS, keeping the usable keys; a key it cannot use (a
// type go-jose does not know, a private or symmetric key, an encryption
// key) is skipped and logged rather than failing the whole set.
func (k *Keys) parseSet(body []byte) (*jose.JSONWebKeySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	set := &jose.JSONWebKeySet{}
	for i, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := json.Unmarshal(raw, &key); err != nil {
			k.log.Warn("jwks: key skipped", "source", k.source(), "index", i, "err", err)
			continue
		}
		if reason := unusable(&key); reason != "" {
			k.log.Warn("jwks: key skipped", "source", k.source(), "index", i, "kid", key.KeyID, "reason", reason)
			continue
		}
		set.Keys = append(set.Keys, key)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("JWKS: no usable keys")
	}
	return set, nil
}

func unusable(key *jose.JSONWebKey) string {
	switch {
	case key.KeyID == "":
		return "no kid"
	case key.Use != "" && key.Use != "sig":
		return "not a signature key"
	case !key.IsPublic():
		return "not a public key"
	}
	switch pub := key.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return "RSA key shorter than 2048 bits"
		}
		return ""
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return ""
		}
		return "unsupported curve"
	}
	return fmt.Sprintf("unsupported key type %T", key.Key)
}
