package etcd

// The key layout under the configured prefix P (every key starts with
// P + "/"):
//
//	P/schema                          → "1"
//	P/cert/<serial hex>               → certificate record (JSON)
//	P/tok/<token hash hex>            → join token (JSON)
//	P/once/<replay key>               → serial hex of the certificate that used it
//	P/rev/<issuer SKI hex>/<serial>   → revocation (JSON), one issuer's entries contiguous
//	P/exp/c/<NotAfter s, 16 hex><serial hex>   → expiryEntry (JSON), for Sweep and IssuerStats
//	P/exp/t/<ExpiresAt s, 16 hex><hash hex>    → token hash hex, for Sweep
//	P/renewed/<serial hex>            → its one renewal (store.Renewal, JSON; lineage.go)
//	P/anchors                         → the trust anchors (JSON)
//	P/workloads                       → the workload definitions (JSON, workloads.go)
//	P/migrating                       → start time of an Import not finished (import.go)
//	P/log/state                       → translog.State.MarshalBinary
//	P/log/sth                         → the last signed tree head (JSON)
//	P/log/e/<index, 16 hex>           → leaf input
//	P/log/h/<leaf hash hex>           → index, 8 bytes big-endian
//	P/log/n/<level, 2 hex><index, 16 hex>  → node hash (32 bytes)
//
// Serials and hashes are lowercase hex, whose order is the order of their
// bytes, so ranges list certificates and revocations in serial order as
// store/bolt does. Log entries, the hash index and nodes are only ever
// added; the state key is rewritten by each committed batch, and every
// batch that appends compares its mod revision, so the log has one linear
// history whichever replica appends.

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/compact"
)

type keys struct{ p string }

func (k keys) schema() string                { return k.p + "/schema" }
func (k keys) cert(serial string) string     { return k.p + "/cert/" + serial }
func (k keys) certs() string                 { return k.p + "/cert/" }
func (k keys) token(hash []byte) string      { return k.p + "/tok/" + hex.EncodeToString(hash) }
func (k keys) once(key string) string        { return k.p + "/once/" + key }
func (k keys) revs(ski string) string        { return k.p + "/rev/" + ski + "/" }
func (k keys) revoked() string               { return k.p + "/rev/" }
func (k keys) rev(ski, serial string) string { return k.revs(ski) + serial }
func (k keys) certExpiries() string          { return k.p + "/exp/c/" }
func (k keys) tokenExpiries() string         { return k.p + "/exp/t/" }
func (k keys) anchors() string               { return k.p + "/anchors" }
func (k keys) logState() string              { return k.p + "/log/state" }
func (k keys) logSTH() string                { return k.p + "/log/sth" }
func (k keys) logEntry(i uint64) string      { return fmt.Sprintf("%s/log/e/%016x", k.p, i) }
func (k keys) logHash(h []byte) string       { return k.p + "/log/h/" + hex.EncodeToString(h) }
func (k keys) node(id compact.NodeID) string {
	return fmt.Sprintf("%s/log/n/%02x%016x", k.p, id.Level, id.Index)
}

// certExpiry and tokenExpiry index a record by its expiry second.
func (k keys) certExpiry(t time.Time, serial string) string {
	return k.certExpiries() + expirySeconds(t) + serial
}
func (k keys) tokenExpiry(t time.Time, hash []byte) string {
	return k.tokenExpiries() + expirySeconds(t) + hex.EncodeToString(hash)
}

// expirySeconds is t in Unix seconds, clamped at zero, as 16 hex digits.
func expirySeconds(t time.Time) string { return fmt.Sprintf("%016x", max(t.Unix(), 0)) }

// expiryEntry is the value of a certificate's expiry key: enough for
// IssuerStats and Sweep without reading the records.
type expiryEntry struct {
	Serial      string    `json:"s"`
	IssuerSKI   string    `json:"i"`
	Provisioner string    `json:"p"`
	NotAfter    time.Time `json:"na"`
}
