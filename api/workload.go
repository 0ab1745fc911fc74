package api

// Workload identities: the admin API that defines them, and the mTLS
// endpoints a node agent uses (its definitions, and a workload SVID
// signed for one of its callers). The node agent signs nothing: the CA
// issues only what a definition allows that node.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
	"github.com/agentca/agentca/workloads"
)

// CodeWorkloadNotAllowed refuses a workload SVID no definition allows
// the node.
const CodeWorkloadNotAllowed = "workload_not_allowed"

// CodeConflict refuses a definition whose id exists.
const CodeConflict = "conflict"

// maxCallerSelectors bounds the selectors a node sends for one caller.
const maxCallerSelectors = 256

// WorkloadStore keeps the workload definitions.
type WorkloadStore interface {
	Workloads(ctx context.Context) (*workloads.Set, error)
	UpdateWorkloads(ctx context.Context, fn func(*workloads.Set) error) (*workloads.Set, error)
}

func (s *Server) routeWorkloads(mux *http.ServeMux) {
	if s.workloads == nil {
		return
	}
	mux.HandleFunc("/admin/v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			s.listWorkloads(w, r)
		case http.MethodPost:
			s.createWorkload(w, r)
		default:
			w.Header().Set("Allow", "GET, POST")
			writeError(w, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use GET or POST"))
		}
	})
	mux.HandleFunc("/admin/v1/workloads/delete", allow(http.MethodPost, s.deleteWorkload))
}

func (s *Server) listWorkloads(w http.ResponseWriter, r *http.Request) {
	set, err := s.workloads.Workloads(r.Context())
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	if set.Definitions == nil {
		set.Definitions = []workloads.Definition{}
	}
	writeJSON(w, http.StatusOK, set)
}

func (s *Server) createWorkload(w http.ResponseWriter, r *http.Request) {
	var d workloads.Definition
	if e := decodeJSON(w, r, &d, false); e != nil {
		writeError(w, e)
		return
	}
	if d.ID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		d.ID = "w-" + hex.EncodeToString(b)
	}
	if err := d.Validate(s.ca.TrustDomain()); err != nil {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "%s", strings.TrimPrefix(err.Error(), "workloads: invalid definition: ")))
		return
	}
	if d.NodeCondition != "" {
		if _, err := nodeCondition(d.NodeCondition); err != nil {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "node_condition %s", err))
			return
		}
	}
	if d.TTL != "" {
		if t, _ := time.ParseDuration(d.TTL); t > identity.Ceiling {
			writeError(w, errorf(http.StatusBadRequest, CodeBadTTL, "a workload SVID may live at most %s", identity.Ceiling))
			return
		}
	}
	d.CreatedAt = s.now().UTC()
	exists := errorf(http.StatusConflict, CodeConflict, "a workload definition named %q exists; delete it first", d.ID)
	set, err := s.workloads.UpdateWorkloads(r.Context(), func(set *workloads.Set) error {
		if set.Find(d.ID) != nil {
			return exists
		}
		set.Definitions = append(set.Definitions, d)
		return nil
	})
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	s.log.Info("audit", "op", "workload_create", "id", d.ID, "spiffe_id", d.SPIFFEID, "selectors", strings.Join(d.Selectors, " "),
		"nodes", strings.Join(d.Nodes, " "), "node_provisioners", strings.Join(d.NodeProvisioners, " "), "node_condition", d.NodeCondition, "sequence", set.Sequence)
	writeJSON(w, http.StatusCreated, d)
}

func (s *Server) deleteWorkload(w http.ResponseWriter, r *http.Request) {
	var req wire.WorkloadDeleteRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	missing := errorf(http.StatusNotFound, CodeNotFound, "no workload definition named %q", truncate(req.ID, 64))
	var gone workloads.Definition
	set, err := s.workloads.UpdateWorkloads(r.Context(), func(set *workloads.Set) error {
		i := slices.IndexFunc(set.Definitions, func(d workloads.Definition) bool { return d.ID == req.ID })
		if i < 0 {
			return missing
		}
		gone = set.Definitions[i]
		set.Definitions = slices.Delete(set.Definitions, i, i+1)
		return nil
	})
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	s.log.Info("audit", "op", "workload_delete", "id", gone.ID, "spiffe_id", gone.SPIFFEID, "sequence", set.Sequence)
	writeJSON(w, http.StatusOK, gone)
}

// node authenticates a node agent: a valid client certificate that is not
// itself a workload SVID (a workload cannot act as a node).
func (s *Server) node(r *http.Request) (*store.Certificate, *Error) {
	_, rec, e := s.clientCertificate(r)
	if e != nil {
		return rec, e
	}
	if rec.Parent != "" {
		return rec, errorf(http.StatusForbidden, CodeForbidden, "a workload SVID cannot act as a node")
	}
	if s.workloads == nil {
		return rec, errorf(http.StatusNotFound, CodeNotFound, "this CA serves no workload identities")
	}
	return rec, nil
}

// workloadDefinitions is GET /v1/workload/definitions: the definitions
// the calling node may hand out.
func (s *Server) workloadDefinitions(w http.ResponseWriter, r *http.Request) {
	rec, e := s.node(r)
	if e != nil {
		writeError(w, e)
		return
	}
	set, err := s.workloads.Workloads(r.Context())
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	out := &workloads.Set{Sequence: set.Sequence, Definitions: []workloads.Definition{}}
	for _, d := range set.Definitions {
		if s.nodeAllowed(&d, rec) {
			out.Definitions = append(out.Definitions, d)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// workloadSign is POST /v1/workload/sign.
func (s *Server) workloadSign(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	provName := "unknown"
	a := auditEntry{op: "workload", prov: provName}
	issued, e := s.doWorkloadSign(w, r, &a)
	a.issued, a.e = issued, e
	s.finish(w, r, start, a)
}

func (s *Server) doWorkloadSign(w http.ResponseWriter, r *http.Request, a *auditEntry) (*ca.Issued, *Error) {
	node, e := s.node(r)
	if node != nil {
		a.prov, a.parent = node.Provisioner, node.Serial
	}
	if e != nil {
		return nil, e
	}
	var req wire.WorkloadSignRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return nil, e
	}
	a.spiffeID = truncate(req.SPIFFEID, 256)
	if req.SPIFFEID == "" || req.CSR == "" || len(req.Selectors) == 0 || len(req.Selectors) > maxCallerSelectors {
		return nil, errorf(http.StatusBadRequest, CodeBadRequest, "spiffe_id, csr and 1 to %d selectors are required", maxCallerSelectors)
	}
	for _, sel := range req.Selectors {
		if !workloads.ValidSelector(sel) {
			return nil, errorf(http.StatusBadRequest, CodeBadRequest, "selector %q is not TYPE:NAME:VALUE", truncate(sel, 64))
		}
	}
	csr, err := ca.ParseCSR([]byte(req.CSR))
	if err != nil {
		return nil, csrError(err)
	}
	set, err := s.workloads.Workloads(r.Context())
	if err != nil {
		return nil, s.refusal(err)
	}
	var def *workloads.Definition
	for i, d := range set.Definitions {
		if id, ok := d.Render(req.Selectors); ok && id == req.SPIFFEID && s.nodeAllowed(&d, node) {
			def = &set.Definitions[i]
			break
		}
	}
	if def == nil || identity.ValidateSPIFFEID(req.SPIFFEID, s.ca.TrustDomain()) != nil {
		a.detail = errors.New("no definition for this node yields that SPIFFE ID from those selectors")
		return nil, errorf(http.StatusForbidden, CodeWorkloadNotAllowed, "no workload definition allows this node to hand out %s to a caller with those selectors", truncate(req.SPIFFEID, 256))
	}
	prov := (*s.provs.Load())[node.Provisioner]
	if prov == nil {
		return nil, errorf(http.StatusForbidden, CodeForbidden, "provisioner %q that vouched for this node is no longer configured; enroll again", node.Provisioner)
	}
	ttl, _ := time.ParseDuration(def.TTL) // validated at creation; empty is zero
	creq := &ca.Request{PublicKey: csr.PublicKey, SPIFFEID: req.SPIFFEID, Provisioner: node.Provisioner, TTL: ttl,
		DefaultTTL: prov.DefaultTTL, MaxTTL: prov.MaxTTL, Parent: node.Serial}
	claims := map[string]string{"node": node.SPIFFEID, "node_provisioner": node.Provisioner, "definition": def.ID}
	for _, sel := range req.Selectors {
		claims[sel] = ""
	}
	creq.PolicyClaims = claims
	issued, e, err := s.issue(r, policy.EndpointWorkload, creq)
	if e != nil {
		return nil, e
	}
	if err != nil {
		return nil, s.refusal(err)
	}
	// The node may have been revoked while this was issued: its revoker
	// listed its workloads before this one was recorded. Read the node
	// again and revoke what was just issued if so.
	if cur, err := s.store.Certificate(r.Context(), node.Serial); err != nil || cur.Revoked() {
		ctx := context.WithoutCancel(r.Context())
		if rec, rerr := s.rev.RevokeIssued(ctx, issued.Serial, s.now(), "node-revoked", r.RemoteAddr); rerr != nil {
			s.log.Error("workload: revoking an SVID issued to a revoked node failed", "serial", issued.Serial, "err", rerr)
		} else {
			s.countRevoked([]store.Certificate{*rec})
		}
		return nil, errorf(http.StatusForbidden, CodeCertificateRevoked, "the client certificate is revoked")
	}
	return issued, nil
}

// defaultRevocation is the revocation service of a Server given none:
// over its store and workload definitions, telling only the client
// certificate cache (Options.ClientCerts), if any.
func (s *Server) defaultRevocation(opts Options) (*revocation.Service, error) {
	var wl revocation.Workloads
	if opts.Workloads != nil {
		wl = opts.Workloads
	}
	var n revocation.Notifier
	if s.clientCerts != nil {
		n = revocation.Direct(s.clientCerts)
	}
	return revocation.New(revocation.Options{Store: s.store, Workloads: wl, Notifier: n, Ceiling: identity.Ceiling, Logger: s.log})
}
