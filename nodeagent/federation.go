package nodeagent

// Federated bundles (SPIFFE federation): the bundles of the foreign trust
// domains the node's Source fetched from the CA, sent in
// X509SVIDResponse.federated_bundles and FetchX509Bundles, and as the
// SDS validation context "ALL" (Envoy's SPIFFE certificate validator).

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
)

// federatedDER returns the federated bundles, by trust domain ID
// ("spiffe://b.example"), each the concatenated DER of its authorities.
func (a *Agent) federatedDER() map[string][]byte {
	if a.cfg.Federated == nil {
		return nil
	}
	fed := a.cfg.Federated()
	if len(fed) == 0 {
		return nil
	}
	out := make(map[string][]byte, len(fed))
	for td, roots := range fed {
		if td == a.cfg.TrustDomain || len(roots) == 0 {
			continue // never an empty bundle, never a second own one
		}
		out[td.IDString()] = concatDER(roots)
	}
	return out
}

// federatedDigest is a digest of the federated bundles, to notice changes.
func (a *Agent) federatedDigest() [32]byte {
	fed := a.federatedDER()
	ids := make([]string, 0, len(fed))
	for id := range fed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id + "\x00"))
		h.Write(fed[id])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// federatedState appends the federated bundles to a stream's state, so a
// change of them is sent.
func federatedState(b *strings.Builder, fed map[string][]byte) {
	ids := make([]string, 0, len(fed))
	for id := range fed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b.WriteString(id)
		b.Write(fed[id])
	}
}

// AllSecret is the SDS validation context with the own and the federated
// bundles, as SPIRE names it: served only while there are federated
// bundles.
const AllSecret = "ALL"

// spiffeValidatorName is Envoy's SPIFFE certificate validator extension.
const spiffeValidatorName = "envoy.tls.cert_validator.spiffe"

// allSecret is the "ALL" validation context: Envoy's SPIFFE certificate
// validator with one bundle per trust domain, so a root of one trust
// domain never vouches for an ID of another (a merged trusted_ca would).
// Nil when there is no federated bundle.
func (a *Agent) allSecret() (*tlsv3.Secret, string, error) {
	fed := a.cfg.Federated
	if fed == nil {
		return nil, "", nil
	}
	bundles := fed()
	if len(bundles) == 0 {
		return nil, "", nil
	}
	tds := make([]spiffeid.TrustDomain, 0, len(bundles))
	for td, roots := range bundles {
		if td != a.cfg.TrustDomain && len(roots) > 0 {
			tds = append(tds, td)
		}
	}
	if len(tds) == 0 {
		return nil, "", nil
	}
	slices.SortFunc(tds, func(x, y spiffeid.TrustDomain) int { return strings.Compare(x.Name(), y.Name()) })
	own := pemCerts(a.Bundle())
	conf := &tlsv3.SPIFFECertValidatorConfig{TrustDomains: []*tlsv3.SPIFFECertValidatorConfig_TrustDomain{
		{Name: a.cfg.TrustDomain.Name(), TrustBundle: inline(own)}}}
	h := sha256.New()
	h.Write(own)
	for _, td := range tds {
		p := pemCerts(bundles[td])
		conf.TrustDomains = append(conf.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{Name: td.Name(), TrustBundle: inline(p)})
		h.Write([]byte(td.Name()))
		h.Write(p)
	}
	typed, err := anypb.New(conf)
	if err != nil {
		return nil, "", err
	}
	s := &tlsv3.Secret{Name: AllSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: spiffeValidatorName, TypedConfig: typed}}}}
	return s, hex.EncodeToString(h.Sum(nil)), nil
}
