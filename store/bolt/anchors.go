package bolt

// Trust anchors: one JSON value, meta "anchors", changed only inside a
// write transaction, so concurrent UpdateAnchors calls serialise.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/agentca/agentca/store"
	bbolt "go.etcd.io/bbolt"
)

var keyAnchors = []byte("anchors")

// Anchors implements store.Store.
func (s *Store) Anchors(ctx context.Context) (*store.AnchorSet, error) {
	return viewJSON[store.AnchorSet](s, keyAnchors, "anchors")
}

// UpdateAnchors implements store.Store.
func (s *Store) UpdateAnchors(ctx context.Context, fn func(*store.AnchorSet) error) (*store.AnchorSet, error) {
	return updateJSON(ctx, s, keyAnchors, "anchors", func(a *store.AnchorSet) { a.Sequence++ }, fn)
}

// IssuerStats implements store.Store. It walks the certificate expiry
// index from now on, so it reads every unexpired record once.
func (s *Store) IssuerStats(ctx context.Context, issuerSKI string, now time.Time) (store.IssuerStats, error) {
	var out store.IssuerStats
	start := expirySeconds(now)
	err := s.view(func(tx *bbolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		c := tx.Bucket(bucketCertExpiry).Cursor()
		for k, serial := c.Seek(start); k != nil; k, serial = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			v := certs.Get(serial)
			if v == nil {
				continue
			}
			var rec struct {
				IssuerSKI   string    `json:"issuer_ski"`
				Provisioner string    `json:"provisioner"`
				NotAfter    time.Time `json:"not_after"`
			}
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode certificate %x: %w", serial, err)
			}
			if rec.IssuerSKI != issuerSKI || !rec.NotAfter.After(now) {
				continue
			}
			out.Add(rec.Provisioner, rec.NotAfter)
		}
		return nil
	})
	return out, wrap(err)
}
