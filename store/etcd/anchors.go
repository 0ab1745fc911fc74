package etcd

// Trust anchors (one JSON value, P/anchors, replaced by compare-and-swap on
// its mod revision), issuer statistics and retention.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Anchors implements store.Store.
func (s *Store) Anchors(ctx context.Context) (*store.AnchorSet, error) {
	return getJSON[store.AnchorSet](ctx, s, s.k.anchors(), "anchors")
}

// UpdateAnchors implements store.Store: fn runs on the set read, and the
// result is stored only if no one changed the set meanwhile; otherwise fn
// runs again on the new set.
func (s *Store) UpdateAnchors(ctx context.Context, fn func(*store.AnchorSet) error) (*store.AnchorSet, error) {
	return updateJSON(ctx, s, s.k.anchors(), "anchors", func(a *store.AnchorSet) { a.Sequence++ }, fn)
}

// IssuerStats implements store.Store. It walks the certificate expiry
// index from now on, so it reads every unexpired certificate's index entry
// once and no record.
func (s *Store) IssuerStats(ctx context.Context, issuerSKI string, now time.Time) (store.IssuerStats, error) {
	var out store.IssuerStats
	from := s.k.certExpiries() + expirySeconds(now)
	err := s.rangeAll(ctx, from, clientv3.GetPrefixRangeEnd(s.k.certExpiries()), func(kv *mvccpb.KeyValue) error {
		var e expiryEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		if e.IssuerSKI != issuerSKI || !e.NotAfter.After(now) {
			return nil
		}
		out.Add(e.Provisioner, e.NotAfter)
		return nil
	})
	return out, err
}

// Sweep implements store.Store. It walks the expiry indexes from the
// oldest entry and deletes, in transactions of at most --max-txn-ops
// operations, each expired certificate with its revocation entry and
// index entry, then each expired join token with its index entry. Deletes
// of records that are already gone are harmless, so a sweep racing another
// replica's sweep removes each record once.
func (s *Store) Sweep(ctx context.Context, before time.Time, limit int) (store.Swept, error) {
	if limit <= 0 {
		limit = 1000
	}
	if s.isClosed() {
		return store.Swept{}, store.ErrClosed
	}
	var out store.Swept
	cut := expirySeconds(before)
	n := 0
	expired := func(prefix string) ([]*mvccpb.KeyValue, error) {
		if n >= limit {
			return nil, nil
		}
		rctx, cancel := s.reqCtx(ctx)
		defer cancel()
		resp, err := s.cli.Get(rctx, prefix, clientv3.WithRange(prefix+cut), clientv3.WithLimit(int64(limit-n)))
		if err != nil {
			return nil, s.wrap(err)
		}
		n += len(resp.Kvs)
		return resp.Kvs, nil
	}
	// del runs deletes in chunks; counted[i] reports how many records
	// the delete at index i removed.
	del := func(ops []clientv3.Op, counted func(i int, deleted int64)) error {
		start := 0
		for chunk := range slices.Chunk(ops, s.maxOps) {
			rctx, cancel := s.reqCtx(ctx)
			resp, err := s.cli.Txn(rctx).Then(chunk...).Commit()
			cancel()
			if err != nil {
				return s.wrap(err)
			}
			for i, r := range resp.Responses {
				counted(start+i, r.GetResponseDeleteRange().Deleted)
			}
			start += len(chunk)
		}
		return nil
	}
	certs, err := expired(s.k.certExpiries())
	if err != nil {
		return out, err
	}
	var ops []clientv3.Op
	isRecord := map[int]bool{}
	for _, kv := range certs {
		var e expiryEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return out, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		isRecord[len(ops)] = true
		ops = append(ops, clientv3.OpDelete(s.k.cert(e.Serial)), clientv3.OpDelete(s.k.renewal(e.Serial)))
		if _, err := hex.DecodeString(e.IssuerSKI); err == nil && e.IssuerSKI != "" {
			ops = append(ops, clientv3.OpDelete(s.k.rev(strings.ToLower(e.IssuerSKI), e.Serial)))
		}
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	if err := del(ops, func(i int, d int64) {
		if isRecord[i] {
			out.Certificates += int(d)
		}
	}); err != nil {
		return out, err
	}
	toks, err := expired(s.k.tokenExpiries())
	if err != nil {
		return out, err
	}
	ops, isRecord = ops[:0], map[int]bool{}
	for _, kv := range toks {
		h, err := hex.DecodeString(string(kv.Value))
		if err != nil {
			return out, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		isRecord[len(ops)] = true
		ops = append(ops, clientv3.OpDelete(s.k.token(h)), clientv3.OpDelete(string(kv.Key)))
	}
	if err := del(ops, func(i int, d int64) {
		if isRecord[i] {
			out.JoinTokens += int(d)
		}
	}); err != nil {
		return out, err
	}
	out.More = n == limit
	return out, nil
}
