// Package anchors is the trust-anchor runtime of a daemon. The anchor set
// lives in the store (see store.AnchorSet); a Runtime, built whole by New,
// turns it into the running CA: the active issuing CA signs leaves, every
// active or retiring issuing CA keeps a CRL publisher and a delegated
// OCSP responder certificate, every root in use answers for its issuing
// CAs (roots.go), every staged, active or retiring root is published in
// /v1/roots and the bundle, and the anchors' JWT-SVID keys follow them
// (jwt.go). The set is applied at start, after each transition made here,
// and whenever the stored sequence moves (another replica changed it), so
// every process converges on the stored state.
//
// A Runtime serves the admin API's anchor transitions (api.AnchorAdmin),
// the CRLs (api.CRLs), the published trust material (api.TrustSource),
// and rebuilds a CRL when told of a revocation (revocation.Cache). It
// does not serve HTTP.
package anchors
