// Package workloads defines workload identities: which SPIFFE ID a workload
// with which selectors may have, and which nodes may hand it out. The CA
// stores the definitions and decides with them; the node agent receives
// its node's definitions and uses the same code to know what to ask for.
// It is a leaf package: the node agent links no server code.
package workloads

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Definition is one workload identity.
type Definition struct {
	// ID names the definition (1-64 letters, digits, '.', '_', '-').
	ID string `json:"id"`
	// SPIFFEID is a SPIFFE ID, or a template whose path holds
	// placeholders {{TYPE}} replaced by the value of the caller's
	// selector TYPE:VALUE (for example {{k8s:ns}}). Each value must be
	// one valid path segment, so a selector cannot add path elements.
	SPIFFEID string `json:"spiffe_id"`
	// Selectors the caller must all have ("unix:uid:1000").
	Selectors []string `json:"selectors"`
	// Nodes may hand the identity out: a node's SPIFFE ID, or a prefix
	// ending in "/*".
	Nodes []string `json:"nodes,omitempty"`
	// NodeProvisioners may hand it out: nodes whose certificate a
	// provisioner of that name vouched for.
	NodeProvisioners []string `json:"node_provisioners,omitempty"`
	// NodeCondition, when set, is a CEL expression over the node
	// certificate's record (claims, spiffe_id, provisioner) that must
	// also be true: a node must match Nodes or NodeProvisioners (when
	// either is given) and the condition. The CA compiles and evaluates
	// it (package policy); this package only carries it.
	NodeCondition string `json:"node_condition,omitempty"`
	// TTL of the SVIDs, a Go duration; empty means the node
	// provisioner's default.
	TTL       string    `json:"ttl,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// Set is every workload definition, with a sequence that increases with
// every stored change.
type Set struct {
	Sequence    uint64       `json:"sequence"`
	Definitions []Definition `json:"definitions"`
}

// Find returns the definition with id, or nil.
func (s *Set) Find(id string) *Definition {
	for i := range s.Definitions {
		if s.Definitions[i].ID == id {
			return &s.Definitions[i]
		}
	}
	return nil
}

// Clone returns a deep enough copy of s for an update.
func (s *Set) Clone() *Set {
	return &Set{Sequence: s.Sequence, Definitions: slices.Clone(s.Definitions)}
}

// Bounds of a definition.
const (
	MaxSelectors   = 32
	MaxNodes       = 64
	maxSelectorLen = 512
	// MaxConditionLen bounds NodeCondition (policy.MaxExprLength).
	MaxConditionLen = 4096
)

// ErrInvalid wraps every reason Validate refuses a definition.
var ErrInvalid = errors.New("workloads: invalid definition")

// Validate checks d for trust domain td.
func (d *Definition) Validate(td string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if !validID(d.ID) {
		return bad("id must be 1-64 letters, digits, '.', '_' or '-'")
	}
	if err := checkTemplate(d.SPIFFEID, td); err != nil {
		return bad("spiffe_id: %v", err)
	}
	if len(d.Selectors) == 0 || len(d.Selectors) > MaxSelectors {
		return bad("want 1 to %d selectors", MaxSelectors)
	}
	for _, s := range d.Selectors {
		if !ValidSelector(s) {
			return bad("selector %q is not TYPE:NAME:VALUE (such as unix:uid:1000)", truncate(s))
		}
	}
	if len(d.Nodes)+len(d.NodeProvisioners) == 0 && d.NodeCondition == "" {
		return bad("name the nodes that may hand it out (nodes, node_provisioners or node_condition)")
	}
	if len(d.NodeCondition) > MaxConditionLen {
		return bad("node_condition is longer than %d bytes", MaxConditionLen)
	}
	if len(d.Nodes)+len(d.NodeProvisioners) > MaxNodes {
		return bad("at most %d node allowances", MaxNodes)
	}
	for _, n := range d.Nodes {
		id := strings.TrimSuffix(n, "/*")
		if identity.ValidateSPIFFEID(id, td) != nil {
			return bad("node %q is not a SPIFFE ID of %s (or a prefix ending in /*)", truncate(n), td)
		}
	}
	for _, p := range d.NodeProvisioners {
		if p == "" || len(p) > 64 {
			return bad("node provisioner names are 1-64 characters")
		}
	}
	if d.TTL != "" {
		if t, err := time.ParseDuration(d.TTL); err != nil || t <= 0 {
			return bad("ttl %q is not a positive Go duration", truncate(d.TTL))
		}
	}
	return nil
}

func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// ValidSelector reports whether s has the form TYPE:NAME:VALUE (at least
// two colons, printable, no spaces).
func ValidSelector(s string) bool {
	if len(s) > maxSelectorLen || strings.Count(s, ":") < 2 || strings.HasPrefix(s, ":") {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f })
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// checkTemplate checks that tmpl is a SPIFFE ID of td once its
// placeholders are filled, with placeholders only in the path.
func checkTemplate(tmpl, td string) error {
	prefix := "spiffe://" + td + "/"
	if !strings.HasPrefix(tmpl, prefix) {
		return fmt.Errorf("%q is not a SPIFFE ID of %s", truncate(tmpl), td)
	}
	filled, err := fill(tmpl, func(string) (string, bool) { return "x", true })
	if err != nil {
		return err
	}
	sid, err := spiffeid.FromString(filled)
	if err != nil {
		return fmt.Errorf("%q is not a SPIFFE ID: %v", truncate(tmpl), err)
	}
	if sid.TrustDomain().Name() != td || sid.Path() == "" {
		return fmt.Errorf("%q is not a SPIFFE ID of %s", truncate(tmpl), td)
	}
	return nil
}

// fill replaces each {{TYPE}} of tmpl with value(TYPE).
func fill(tmpl string, value func(typ string) (string, bool)) (string, error) {
	var b strings.Builder
	rest := tmpl
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			if strings.Contains(rest, "}}") {
				return "", errors.New("unbalanced '}}'")
			}
			b.WriteString(rest)
			return b.String(), nil
		}
		b.WriteString(rest[:i])
		rest = rest[i+2:]
		j := strings.Index(rest, "}}")
		if j < 0 {
			return "", errors.New("unclosed '{{'")
		}
		typ := rest[:j]
		rest = rest[j+2:]
		if strings.Count(typ, ":") < 1 || strings.ContainsAny(typ, "{} ") {
			return "", fmt.Errorf("placeholder {{%s}} is not a selector type such as {{k8s:ns}}", truncate(typ))
		}
		v, ok := value(typ)
		if !ok {
			return "", fmt.Errorf("no single selector of type %s", truncate(typ))
		}
		b.WriteString(v)
	}
}

// Render returns the SPIFFE ID d gives a caller with selectors: false when
// the caller lacks a required selector, or a placeholder has no value
// (none, or several selectors of its type) or a value that is not one
// path segment.
func (d *Definition) Render(selectors []string) (string, bool) {
	for _, s := range d.Selectors {
		if !slices.Contains(selectors, s) {
			return "", false
		}
	}
	id, err := fill(d.SPIFFEID, func(typ string) (string, bool) {
		v, n := "", 0
		for _, s := range selectors {
			if rest, ok := strings.CutPrefix(s, typ+":"); ok {
				v, n = rest, n+1
			}
		}
		return v, n == 1 && spiffeid.ValidatePathSegment(v) == nil
	})
	if err != nil {
		return "", false
	}
	if _, err := spiffeid.FromString(id); err != nil {
		return "", false
	}
	return id, true
}

// NodeAllowed reports whether the node with SPIFFE ID nodeID, vouched for
// by provisioner, is named by d's Nodes or NodeProvisioners. It does not
// evaluate NodeCondition: the CA does (a definition with only a
// condition names no node here).
func (d *Definition) NodeAllowed(nodeID, provisioner string) bool {
	if slices.Contains(d.NodeProvisioners, provisioner) {
		return true
	}
	for _, n := range d.Nodes {
		if p, ok := strings.CutSuffix(n, "*"); ok && strings.HasSuffix(p, "/") {
			if strings.HasPrefix(nodeID, p) && len(nodeID) > len(p) {
				return true
			}
		} else if n == nodeID {
			return true
		}
	}
	return false
}

// Identity is one SPIFFE ID a caller gets, with the definition that gave
// it.
type Identity struct {
	SPIFFEID string
	TTL      string
	Def      string
}

// Identities returns the SPIFFE IDs defs give a caller with selectors,
// each once (the first definition naming it wins), in definition order.
func Identities(defs []Definition, selectors []string) []Identity {
	var out []Identity
	for _, d := range defs {
		id, ok := d.Render(selectors)
		if !ok || slices.ContainsFunc(out, func(i Identity) bool { return i.SPIFFEID == id }) {
			continue
		}
		out = append(out, Identity{SPIFFEID: id, TTL: d.TTL, Def: d.ID})
	}
	return out
}
