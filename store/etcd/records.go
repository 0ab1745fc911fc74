package etcd

// The record methods other than Issue: certificates, revocations,
// replay keys and join tokens.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Certificate implements store.Store.
func (s *Store) Certificate(ctx context.Context, serial string) (*store.Certificate, error) {
	sn, err := store.NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	kv, err := s.get(ctx, s.k.cert(sn))
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, store.ErrNotFound
	}
	var c store.Certificate
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return nil, fmt.Errorf("store: decode certificate %s: %w", sn, err)
	}
	return &c, nil
}

// ListCertificates implements store.Store.
func (s *Store) ListCertificates(ctx context.Context, opts store.ListOptions) ([]store.Certificate, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 1000
	}
	from := s.k.certs()
	if opts.After != "" {
		after, err := store.NormalizeSerial(opts.After)
		if err != nil {
			return nil, err
		}
		from = s.k.cert(after) + "\x00"
	}
	end := clientv3.GetPrefixRangeEnd(s.k.certs())
	page := int64(max(limit, 100))
	var out []store.Certificate
	for len(out) < limit {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, from, clientv3.WithRange(end), clientv3.WithLimit(page))
		cancel()
		if err != nil {
			return nil, s.wrap(err)
		}
		for _, kv := range resp.Kvs {
			if opts.SkipRaw(kv.Value) {
				continue
			}
			var rec store.Certificate
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return nil, fmt.Errorf("store: decode certificate %s: %w", kv.Key, err)
			}
			if !opts.Keep(&rec) {
				continue
			}
			if out = append(out, rec); len(out) == limit {
				break
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return out, nil
}

// rangeAll reads every key under prefix, in pages.
func (s *Store) rangeAll(ctx context.Context, from, end string, fn func(kv *mvccpb.KeyValue) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, from, clientv3.WithRange(end), clientv3.WithLimit(1000))
		cancel()
		if err != nil {
			return s.wrap(err)
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Revocations implements store.Store.
func (s *Store) Revocations(ctx context.Context, issuerSKI string, now time.Time) ([]store.Revocation, error) {
	if _, err := hex.DecodeString(issuerSKI); err != nil || issuerSKI == "" {
		return nil, fmt.Errorf("store: bad issuer SKI %q", issuerSKI)
	}
	prefix := s.k.revs(strings.ToLower(issuerSKI))
	var out []store.Revocation
	err := s.rangeAll(ctx, prefix, clientv3.GetPrefixRangeEnd(prefix), func(kv *mvccpb.KeyValue) error {
		var r store.Revocation
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return fmt.Errorf("store: decode revocation %s: %w", kv.Key, err)
		}
		if r.NotAfter.After(now) {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// ReplayKey implements store.Store.
func (s *Store) ReplayKey(ctx context.Context, key string) (string, error) {
	kv, err := s.get(ctx, s.k.once(key))
	if err != nil {
		return "", err
	}
	if kv == nil {
		return "", store.ErrNotFound
	}
	return string(kv.Value), nil
}

// DeleteReplayKey implements store.Store.
func (s *Store) DeleteReplayKey(ctx context.Context, key string) error {
	k := s.k.once(key)
	return s.write(ctx, &op{keys: []string{k}, writes: 1, bytes: len(k), apply: func(b *batch) error {
		if _, ok, err := b.get(k); err != nil {
			return err
		} else if !ok {
			return refuse(store.ErrNotFound)
		}
		b.del(k)
		return nil
	}})
}

// CreateJoinTokens implements store.Store. The tokens are created in
// transactions of at most --max-txn-ops/2 tokens each (a request may hold
// 100,000); should one of them find a duplicate, the tokens the earlier
// ones created are deleted again before ErrDuplicateToken is returned.
// Token hashes are SHA-256 of 256 random bits, so this only happens when
// a caller repeats a request.
func (s *Store) CreateJoinTokens(ctx context.Context, toks []store.JoinToken) error {
	vals := make([][]byte, len(toks))
	seen := make(map[string]bool, len(toks))
	dup := false
	for i := range toks {
		if len(toks[i].Hash) == 0 {
			return errors.New("store: join token without hash")
		}
		v, err := json.Marshal(&toks[i])
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		vals[i] = v
		dup = dup || seen[string(toks[i].Hash)]
		seen[string(toks[i].Hash)] = true
	}
	if dup {
		return store.ErrDuplicateToken
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	per := max(s.maxOps/2, 1)
	var done []store.JoinToken
	undo := func() {
		for chunk := range slices.Chunk(done, per) {
			dels := make([]clientv3.Op, 0, 2*len(chunk))
			for _, t := range chunk {
				dels = append(dels, clientv3.OpDelete(s.k.token(t.Hash)), clientv3.OpDelete(s.k.tokenExpiry(t.ExpiresAt, t.Hash)))
			}
			rctx, cancel := s.reqCtx(context.WithoutCancel(ctx))
			_, _ = s.cli.Txn(rctx).Then(dels...).Commit()
			cancel()
		}
	}
	for start := 0; start < len(toks); start += per {
		chunk := toks[start:min(start+per, len(toks))]
		cmps := make([]clientv3.Cmp, len(chunk))
		puts := make([]clientv3.Op, 0, 2*len(chunk))
		for i, t := range chunk {
			k := s.k.token(t.Hash)
			cmps[i] = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
			puts = append(puts, clientv3.OpPut(k, string(vals[start+i])),
				clientv3.OpPut(s.k.tokenExpiry(t.ExpiresAt, t.Hash), hex.EncodeToString(t.Hash)))
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Txn(rctx).If(cmps...).Then(puts...).Commit()
		cancel()
		if err != nil {
			undo()
			return s.wrap(err)
		}
		if !resp.Succeeded {
			undo()
			return store.ErrDuplicateToken
		}
		done = append(done, chunk...)
	}
	return nil
}

// JoinToken implements store.Store.
func (s *Store) JoinToken(ctx context.Context, hash []byte) (*store.JoinToken, error) {
	if len(hash) == 0 {
		return nil, store.ErrNotFound
	}
	// Served by the member the client talks to, without a round of the
	// cluster: it may lag, so a token it does not hold yet is read again
	// linearizably (store.Store's JoinToken allows a stale record).
	kv, err := s.get(ctx, s.k.token(hash), clientv3.WithSerializable())
	if err == nil && kv == nil {
		kv, err = s.get(ctx, s.k.token(hash))
	}
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, store.ErrNotFound
	}
	// The issuance that follows (join token attestation) uses what was
	// read as its hint, instead of reading the token again.
	s.tokenHints.put(kv)
	var t store.JoinToken
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return nil, fmt.Errorf("store: decode join token: %w", err)
	}
	return &t, nil
}
