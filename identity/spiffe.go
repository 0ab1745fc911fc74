package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxSPIFFEIDBytes is the SPIFFE ID specification's limit on a SPIFFE ID
// (URI) in an X.509 SVID: 2048 bytes.
const MaxSPIFFEIDBytes = 2048

// ReservedSPIFFEPath is the path under which the CA names its own
// identities (its HTTPS server certificate is
// spiffe://<trust domain>/agentca/server). No provisioner, template or
// join token may grant an ID equal to it or under it, whatever its case.
const ReservedSPIFFEPath = "/agentca"

// ServerSPIFFEID is the SPIFFE ID of the CA's own HTTPS server
// certificate in trust domain td.
func ServerSPIFFEID(td string) string { return "spiffe://" + td + ReservedSPIFFEPath + "/server" }

// ValidateTrustDomain checks a SPIFFE trust domain name (lowercase
// letters, digits, dots, dashes and underscores), with go-spiffe's rules.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	if strings.Contains(td, "/") {
		return fmt.Errorf("trust domain %q must be a bare name such as example.org", td)
	}
	if _, err := spiffeid.TrustDomainFromString(td); err != nil {
		return fmt.Errorf("trust domain %q: %w", td, err)
	}
	return nil
}

// ValidateSPIFFEID checks that id is a SPIFFE ID with a non-empty path in
// trust domain td, with go-spiffe's rules.
func ValidateSPIFFEID(id, td string) error {
	if err := checkSPIFFEIDLength(id); err != nil {
		return err
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return fmt.Errorf("%q is not a SPIFFE ID: %w", id, err)
	}
	if sid.TrustDomain().Name() != td {
		return fmt.Errorf("SPIFFE ID %q is outside trust domain %q", id, td)
	}
	if sid.Path() == "" {
		return fmt.Errorf("SPIFFE ID %q has no path", id)
	}
	return nil
}

// checkSPIFFEIDLength refuses an ID longer than MaxSPIFFEIDBytes; the
// message names the length only (the ID may be anything a caller sent).
func checkSPIFFEIDLength(id string) error {
	if len(id) > MaxSPIFFEIDBytes {
		return fmt.Errorf("SPIFFE ID is %d bytes, longer than the SPIFFE limit of %d", len(id), MaxSPIFFEIDBytes)
	}
	return nil
}

// reservedPath reports whether the path of SPIFFE ID id (already
// validated in trust domain td) is the CA's reserved path or under it.
func reservedPath(id, td string) bool {
	p := strings.ToLower(strings.TrimPrefix(id, "spiffe://"+td))
	return p == ReservedSPIFFEPath || strings.HasPrefix(p, ReservedSPIFFEPath+"/")
}

// ValidateWorkloadSPIFFEID is ValidateSPIFFEID for an identity granted to
// a workload (a join token, a template, a signed or renewed certificate):
// it also refuses the CA's reserved path.
func ValidateWorkloadSPIFFEID(id, td string) error {
	if err := ValidateSPIFFEID(id, td); err != nil {
		return err
	}
	if reservedPath(id, td) {
		return fmt.Errorf("SPIFFE ID %q is under %s, reserved for the CA's own identities", id, ReservedSPIFFEPath+"/")
	}
	return nil
}

// TemplateReserved reports whether a SPIFFE ID template's fixed text
// (up to its first action other than {{.trust_domain}}) already names the
// reserved path, so that every ID it renders would be refused.
func TemplateReserved(tmpl, td string) bool {
	s := tmpl
	for _, a := range []string{"{{.trust_domain}}", "{{ .trust_domain }}"} {
		s = strings.ReplaceAll(s, a, td)
	}
	static := true
	if i := strings.Index(s, "{{"); i >= 0 {
		s, static = s[:i], false
	}
	prefix := strings.ToLower("spiffe://" + td + ReservedSPIFFEPath)
	s = strings.ToLower(s)
	return strings.HasPrefix(s, prefix+"/") || (static && s == prefix)
}
