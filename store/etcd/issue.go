package etcd

// Issue: the issuing transaction and the read-back of an unknown outcome.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/agentca/agentca/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Issue implements store.Store.
func (s *Store) Issue(ctx context.Context, iss *store.Issuance) error {
	serial, err := store.NormalizeSerial(iss.Certificate.Serial)
	if err != nil {
		return err
	}
	rec := iss.Certificate
	rec.Serial = serial
	rec.LogIndex, rec.LogTimestamp = 0, 0 // the store assigns them
	leaf := iss.LogLeaf
	if err := store.CheckLogLeaf(&rec, leaf); err != nil {
		return err
	}
	certJSON, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	exp, err := json.Marshal(&expiryEntry{Serial: serial, IssuerSKI: rec.IssuerSKI, Provisioner: rec.Provisioner, NotAfter: rec.NotAfter})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	certKey := s.k.cert(serial)
	o := s.issueOp(iss, &rec, len(certJSON)+len(exp))
	var logIndex uint64 // set by the apply that commits
	o.apply = func(b *batch) error {
		// Checks first (each key read is compared); nothing is
		// written until all pass.
		chk, refused, err := store.CheckIssue(batchReader{b: b}, iss, serial)
		if err != nil {
			return err
		}
		if refused != nil {
			return refuse(refused)
		}
		var tokJSON, renJSON []byte
		if chk.Token != nil {
			if tokJSON, err = json.Marshal(chk.Token); err != nil {
				return err
			}
		}
		if chk.Renewal != nil {
			if renJSON, err = json.Marshal(chk.Renewal); err != nil {
				return err
			}
		}
		// Writes.
		v := certJSON
		if leaf != nil {
			logIndex = b.addLeaf(leaf)
			v = withLogFields(certJSON, logIndex, leaf.Timestamp())
		}
		b.put(certKey, v)
		b.put(s.k.certExpiry(rec.NotAfter, serial), exp)
		if tokJSON != nil {
			b.put(s.k.token(iss.JoinToken), tokJSON)
		}
		for _, k := range iss.Once {
			b.put(s.k.once(k), []byte(serial))
		}
		if renJSON != nil {
			b.put(s.k.renewal(rec.RenewedFrom), renJSON)
		}
		return nil
	}
	if err := s.write(ctx, o); err != nil {
		var unknown *outcomeUnknown
		if !errors.As(err, &unknown) {
			return s.afterIssue(ctx, iss, err)
		}
		// The transaction may have been committed: an agent retrying
		// would then be refused (its join token or replay keys spent),
		// so find out.
		c, rerr := s.recheck(ctx, certKey, rec.DER)
		if rerr != nil || c == nil {
			return err
		}
		if leaf != nil {
			if s.onLogAppend != nil {
				s.onLogAppend()
			}
			iss.Certificate.LogIndex, iss.Certificate.LogTimestamp = c.LogIndex, c.LogTimestamp
		}
		return nil
	}
	if leaf != nil {
		iss.Certificate.LogIndex, iss.Certificate.LogTimestamp = logIndex, leaf.Timestamp()
	}
	return nil
}

// issueOp is the op of Issue's iss, recorded as rec (of JSON size bytes
// with its expiry entry) without its apply: the keys its checks read (and
// so compare), in the order store.CheckIssue reads them, the writes and
// bytes it adds to a transaction, and its hints.
func (s *Store) issueOp(iss *store.Issuance, rec *store.Certificate, size int) *op {
	o := &op{keys: []string{s.k.cert(rec.Serial)}, writes: 2 + len(iss.Once), bytes: size + 200}
	var taskKey string
	if rec.Task != "" {
		taskKey = s.k.taskEnded(rec.Task)
		o.keys = append(o.keys, taskKey)
	}
	var tokKey string
	if iss.JoinToken != nil {
		tokKey = s.k.token(iss.JoinToken)
		o.keys = append(o.keys, tokKey)
		o.writes++
		o.bytes += 400
	}
	for _, k := range iss.Once {
		o.keys = append(o.keys, s.k.once(k))
	}
	var renKey string
	if parent := rec.RenewedFrom; parent != "" {
		// The parent's record and renewal key: read and compared, so
		// a revocation or another renewal of it is never outrun.
		renKey = s.k.renewal(parent)
		o.keys = append(o.keys, s.k.cert(parent), renKey)
		o.writes++
		o.bytes += 200
	}
	if leaf := iss.LogLeaf; leaf != nil {
		o.keys = append(o.keys, s.k.logHash(leaf.Hash))
		o.writes += 2
		o.leaves = 1
		o.bytes += len(leaf.Input) + 200
	}
	// Hints: every key absent (a new serial, task, replay key and leaf),
	// but the join token, as JoinToken just read it. A batch of hinted
	// ops is committed without a read first; a wrong hint fails its
	// compare and the batch is read and decided again.
	o.hints = make(map[string]*mvccpb.KeyValue, len(o.keys))
	for _, k := range o.keys {
		o.hints[k] = nil
	}
	if tokKey != "" {
		if kv := s.tokenHints.take(tokKey); kv != nil {
			o.hints[tokKey] = kv
		} else {
			o.hints = nil
		}
	}
	if renKey != "" {
		o.hints = nil // the parent's record exists: read it
	}
	return o
}

// recheck reads a certificate record linearizably after an issuance whose
// transaction's outcome is unknown: it returns the record when it holds
// der (the issuance was committed), nil when etcd answers that it does not
// (it was not, unless etcd still holds the transaction and applies it
// later: the caller answers "unavailable" then, as before). It retries
// while etcd is unavailable, within ctx and a quarter of the request
// timeout (at least 200 ms), so that a caller is answered about the
// request timeout after it asked even without quorum.
func (s *Store) recheck(ctx context.Context, key string, der []byte) (*store.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout/4, 200*time.Millisecond))
	defer cancel()
	for {
		// Without a leader, fail at once (and try again) rather
		// than wait.
		resp, err := s.cli.Get(clientv3.WithRequireLeader(ctx), key)
		if err == nil {
			if len(resp.Kvs) == 0 {
				return nil, nil
			}
			var c store.Certificate
			if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
				return nil, fmt.Errorf("store: decode certificate: %w", err)
			}
			if !bytes.Equal(c.DER, der) {
				return nil, nil
			}
			return &c, nil
		}
		if !isUnavailable(err) {
			return nil, s.wrap(err)
		}
		select {
		case <-ctx.Done():
			return nil, s.wrap(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// withLogFields adds "log_index" and "log_timestamp" to a certificate
// record's JSON encoding (made before the transaction, with both fields
// zero and so omitted), in a new slice.
func withLogFields(rec []byte, index, timestamp uint64) []byte {
	out := make([]byte, 0, len(rec)+64)
	out = append(out, rec[:len(rec)-1]...) // drop the closing brace
	return fmt.Appendf(out, `,"log_index":%d,"log_timestamp":%d}`, index, timestamp)
}
