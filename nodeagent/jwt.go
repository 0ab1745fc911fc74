package nodeagent

// The Workload API's JWT methods. The agent signs nothing here either:
// FetchJWTSVID asks the CA (POST /v1/jwt-svid) over mTLS presenting the
// workload's own X.509-SVID, so the CA's certificate check and runtime
// policy (endpoint "jwt-svid", with the audiences) judge the workload's
// ID; FetchJWTBundles streams the JWT-SVID keys of /v1/bundle, polled
// with the definitions; ValidateJWTSVID checks a token against them with
// go-spiffe.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// JWTCA is the CA's JWT-SVID side (agent.NodeClient).
type JWTCA interface {
	// WorkloadJWTSVID gets a JWT-SVID for the workload presenting svid.
	WorkloadJWTSVID(ctx context.Context, svid *tls.Certificate, audience []string) (*agent.JWTSVID, error)
	// JWTBundle returns the JWT-SVID keys of td.
	JWTBundle(ctx context.Context, td spiffeid.TrustDomain) (*jwtbundle.Bundle, error)
}

// maxJWTCache bounds the JWT-SVIDs kept; past it the expired ones are
// dropped, and if that is not enough, all of them.
const maxJWTCache = 10_000

// jwtState is the agent's JWT side: the trust domain's JWT-SVID keys and
// the JWT-SVIDs issued to its callers, by SPIFFE ID and audiences.
type jwtState struct {
	mu     sync.Mutex
	bundle *jwtbundle.Bundle // nil until fetched
	jwks   []byte            // its JWKS, keys sorted by kid
	cache  map[string]*jwtEntry
	valid  validations // jwtvalidate.go
}

// jwtEntry is one JWT-SVID; sign serialises the requests for it.
type jwtEntry struct {
	sign    sync.Mutex
	tok     *agent.JWTSVID
	renewAt time.Time // half its lifetime, counted from its arrival
}

func (a *Agent) jwtCA() (JWTCA, error) {
	if a.cfg.JWT == nil {
		return nil, status.Error(codes.Unimplemented, "this node agent issues no JWT-SVIDs")
	}
	return a.cfg.JWT, nil
}

// RefreshJWTBundle fetches the JWT-SVID keys now; a change wakes every
// stream.
func (a *Agent) RefreshJWTBundle(ctx context.Context) error {
	jc, err := a.jwtCA()
	if err != nil {
		return nil
	}
	b, err := jc.JWTBundle(ctx, a.cfg.TrustDomain)
	if err != nil {
		return err
	}
	jwks, err := marshalJWKS(b)
	if err != nil {
		return err
	}
	a.jwt.mu.Lock()
	changed := a.jwt.bundle == nil || !b.Equal(a.jwt.bundle)
	if changed {
		a.jwt.bundle, a.jwt.jwks = b, jwks
	}
	a.jwt.mu.Unlock()
	if changed {
		a.log.Info("JWT-SVID keys changed; pushing to streams", "keys", len(b.JWTAuthorities()))
		a.mu.Lock()
		a.notifyLocked()
		a.mu.Unlock()
	}
	return nil
}

// marshalJWKS is b as a JWKS with its keys in kid order (jwtbundle's own
// Marshal follows a map's order, so equal bundles would differ).
func marshalJWKS(b *jwtbundle.Bundle) ([]byte, error) {
	auth := b.JWTAuthorities()
	kids := make([]string, 0, len(auth))
	for kid := range auth {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(kids))}
	for _, kid := range kids {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: auth[kid], KeyID: kid})
	}
	return json.Marshal(set)
}

// jwtBundle returns the JWT-SVID keys, fetching them if they never were.
func (a *Agent) jwtBundle(ctx context.Context) (*jwtbundle.Bundle, []byte, error) {
	a.jwt.mu.Lock()
	b, jwks := a.jwt.bundle, a.jwt.jwks
	a.jwt.mu.Unlock()
	if b != nil {
		return b, jwks, nil
	}
	if err := a.RefreshJWTBundle(ctx); err != nil {
		a.log.Warn("fetching the JWT-SVID keys failed", "err", err)
		return nil, nil, status.Error(codes.Unavailable, "the node agent cannot reach the CA; retry")
	}
	a.jwt.mu.Lock()
	defer a.jwt.mu.Unlock()
	return a.jwt.bundle, a.jwt.jwks, nil
}

// callerSVIDs attests the caller and returns its X.509-SVIDs, with the
// X.509 methods' answers: Unavailable while the CA cannot be reached,
// PermissionDenied for a caller with no identity.
func (a *Agent) callerSVIDs(ctx context.Context) ([]*agent.Credentials, error) {
	sel, err := a.attest(ctx)
	if err != nil {
		return nil, err
	}
	svids, err := a.SVIDs(ctx, sel)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, status.FromContextError(ctx.Err()).Err()
	case err != nil:
		a.log.Warn("cannot serve a workload", "err", err)
		return nil, status.Error(codes.Unavailable, "the node agent cannot reach the CA; retry")
	case len(svids) == 0:
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return svids, nil
}

func (w *workloadAPI) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	jc, err := w.a.jwtCA()
	if err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	for _, aud := range req.Audience {
		if aud == "" || strings.ContainsRune(aud, 0) {
			return nil, status.Error(codes.InvalidArgument, "an audience is empty")
		}
	}
	svids, err := w.a.callerSVIDs(ctx)
	if err != nil {
		return nil, err
	}
	if req.SpiffeId != "" {
		svids = slices.DeleteFunc(svids, func(cr *agent.Credentials) bool { return cr.SPIFFEID != req.SpiffeId })
		if len(svids) == 0 {
			return nil, status.Error(codes.PermissionDenied, "the caller has no such identity")
		}
	}
	resp := &workload.JWTSVIDResponse{}
	for _, cr := range svids {
		id := cr.SPIFFEID
		tok, err := w.a.jwtSVID(ctx, jc, cr, req.Audience)
		if staleSVID(err) {
			// The CA no longer takes this X.509-SVID (revoked, or its
			// anchor retired): get a new one, and try once more.
			w.a.dropSVID(cr)
			if cr, err = w.a.resign(ctx, id); err == nil {
				tok, err = w.a.jwtSVID(ctx, jc, cr, req.Audience)
			}
		}
		if err != nil {
			return nil, jwtError(w.a, id, err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: id, Svid: tok.Token})
	}
	return resp, nil
}

// staleSVID reports a refusal of the X.509-SVID presented rather than of
// the request: not accepted (401) or revoked.
func staleSVID(err error) bool {
	var ae *agent.APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Code == "certificate_revoked")
}

// dropSVID forgets cr if it is still the cached SVID of its identity.
func (a *Agent) dropSVID(cr *agent.Credentials) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.svids[cr.SPIFFEID]; e != nil && e.creds == cr {
		delete(a.svids, cr.SPIFFEID)
		a.notifyLocked()
	}
}

// resign returns the caller's SVID for id again (signed anew if it was
// dropped).
func (a *Agent) resign(ctx context.Context, id string) (*agent.Credentials, error) {
	svids, err := a.callerSVIDs(ctx)
	if err != nil {
		return nil, err
	}
	for _, cr := range svids {
		if cr.SPIFFEID == id {
			return cr, nil
		}
	}
	return nil, status.Error(codes.PermissionDenied, "no identity issued")
}

// jwtError turns the CA's refusal into the caller's answer.
func jwtError(a *Agent, id string, err error) error {
	var ae *agent.APIError
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.As(err, &ae) && (ae.Status == http.StatusForbidden || ae.Status == http.StatusUnauthorized):
		a.log.Warn("the CA refused a JWT-SVID", "spiffe_id", id, "err", err)
		return status.Errorf(codes.PermissionDenied, "the CA refused: %s", ae.Code)
	case errors.As(err, &ae) && ae.Status == http.StatusBadRequest:
		return status.Errorf(codes.InvalidArgument, "the CA refused: %s: %s", ae.Code, ae.Message)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		a.log.Warn("fetching a JWT-SVID failed", "spiffe_id", id, "err", err)
		return status.Error(codes.Unavailable, "the node agent cannot reach the CA; retry")
	}
}

// jwtSVID returns a JWT-SVID of cr's identity for audience: the cached
// one until half its lifetime has passed, else a new one from the CA.
func (a *Agent) jwtSVID(ctx context.Context, jc JWTCA, cr *agent.Credentials, audience []string) (*agent.JWTSVID, error) {
	key := cr.SPIFFEID + "\x00" + strings.Join(audience, "\x00")
	a.jwt.mu.Lock()
	e := a.jwt.cache[key]
	if e == nil {
		if len(a.jwt.cache) >= maxJWTCache {
			a.pruneJWTLocked()
		}
		if a.jwt.cache == nil {
			a.jwt.cache = map[string]*jwtEntry{}
		}
		e = &jwtEntry{}
		a.jwt.cache[key] = e
	}
	tok, renewAt := e.tok, e.renewAt
	a.jwt.mu.Unlock()
	if tok != nil && time.Now().Before(renewAt) {
		return tok, nil
	}
	e.sign.Lock()
	defer e.sign.Unlock()
	a.jwt.mu.Lock()
	tok, renewAt = e.tok, e.renewAt
	a.jwt.mu.Unlock()
	if tok != nil && time.Now().Before(renewAt) {
		return tok, nil // a concurrent caller got it
	}
	got := time.Now()
	tok, err := jc.WorkloadJWTSVID(ctx, cr.TLSCertificate(), audience)
	if err != nil {
		return nil, err
	}
	a.jwt.mu.Lock()
	e.tok, e.renewAt = tok, got.Add(tok.ExpiresAt.Sub(got)/2)
	a.jwt.mu.Unlock()
	return tok, nil
}

// pruneJWTLocked drops the expired JWT-SVIDs, or all of them if none
// expired; a.jwt.mu is held.
func (a *Agent) pruneJWTLocked() {
	now := time.Now()
	for k, e := range a.jwt.cache {
		if e.tok != nil && !now.Before(e.tok.ExpiresAt) {
			delete(a.jwt.cache, k)
		}
	}
	if len(a.jwt.cache) >= maxJWTCache {
		a.jwt.cache = nil
	}
}

func (w *workloadAPI) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	if _, err := w.a.jwtCA(); err != nil {
		return err
	}
	var last []byte
	return w.a.watch(stream.Context(), func([]*agent.Credentials) error {
		_, jwks, err := w.a.jwtBundle(stream.Context())
		if err != nil {
			return err
		}
		if string(jwks) == string(last) {
			return nil
		}
		last = jwks
		return stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{w.a.cfg.TrustDomain.IDString(): jwks}})
	})
}

func (w *workloadAPI) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if _, err := w.a.jwtCA(); err != nil {
		return nil, err
	}
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	if _, err := w.a.callerSVIDs(ctx); err != nil {
		return nil, err
	}
	b, _, err := w.a.jwtBundle(ctx)
	if err != nil {
		return nil, err
	}
	key := validationKey(req.Svid, req.Audience)
	if v, ok := w.a.jwt.valid.get(key, b, time.Now()); ok {
		return &workload.ValidateJWTSVIDResponse{SpiffeId: v.id, Claims: v.claims}, nil
	}
	svid, err := jwtsvid.ParseAndValidate(req.Svid, b, []string{req.Audience})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "the JWT-SVID's claims cannot be represented")
	}
	w.a.jwt.valid.put(key, validation{bundle: b, id: svid.ID.String(), claims: claims, exp: svid.Expiry})
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
