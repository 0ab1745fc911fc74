package etcd

// A backup of the CA's prefix: every key under it, read at one revision,
// as JSON lines (a header, one line per key, an end line that counts
// them), and its restore into an empty prefix.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// BackupHeader is the first line of a backup.
type BackupHeader struct {
	Kind     string `json:"agentca_backup"` // "etcd"
	Prefix   string `json:"prefix"`
	Revision int64  `json:"revision"`
}

// backupLine is one key (K relative to the prefix), or the end line.
type backupLine struct {
	K    string `json:"k,omitempty"`
	V    []byte `json:"v,omitempty"`
	End  bool   `json:"end,omitempty"`
	Keys int    `json:"keys,omitempty"`
}

// backupPage is how many keys one read of a backup takes.
const backupPage = 1000

// Backup writes every key under the prefix, read at one revision (the
// revision of the first read: a consistent copy while replicas write), to
// w, and returns the bytes written.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriterSize(w, 64<<10)}
	enc := json.NewEncoder(cw)
	from, end := s.k.p+"/", clientv3.GetPrefixRangeEnd(s.k.p+"/")
	var rev int64
	n := 0
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(backupPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			return cw.n, s.wrap(err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
			if err := enc.Encode(BackupHeader{Kind: "etcd", Prefix: s.k.p, Revision: rev}); err != nil {
				return cw.n, err
			}
		}
		for _, kv := range resp.Kvs {
			if err := enc.Encode(backupLine{K: strings.TrimPrefix(string(kv.Key), s.k.p), V: kv.Value}); err != nil {
				return cw.n, err
			}
			n++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if err := enc.Encode(backupLine{End: true, Keys: n}); err != nil {
		return cw.n, err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadBackup reads a backup, calling fn for each key (relative to the
// backup's prefix), and checks that it is complete.
func ReadBackup(r io.Reader, fn func(key string, value []byte) error) (*BackupHeader, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	var h BackupHeader
	if err := dec.Decode(&h); err != nil || h.Kind != "etcd" || ValidatePrefix(h.Prefix) != nil {
		return nil, fmt.Errorf("not an agentca etcd backup (%v)", err)
	}
	n := 0
	for {
		var l backupLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("the backup is cut short (no end line)")
			}
			return nil, fmt.Errorf("the backup's line %d: %w", n+2, err)
		}
		if l.End {
			if l.Keys != n {
				return nil, fmt.Errorf("the backup holds %d keys, its end line says %d", n, l.Keys)
			}
			return &h, nil
		}
		if !strings.HasPrefix(l.K, "/") {
			return nil, fmt.Errorf("the backup's line %d: key %q", n+2, l.K)
		}
		if err := fn(l.K, l.V); err != nil {
			return nil, err
		}
		n++
	}
}

// Restore writes the keys of a backup (read by ReadBackup from r) under
// prefix, which must hold no key. While it writes, the prefix is marked
// as an unfinished import, so no replica opens a partial copy; the mark
// goes last. It returns the number of keys written.
func Restore(ctx context.Context, cli *clientv3.Client, prefix string, maxOps int, r io.Reader) (int, error) {
	k := keys{prefix}
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, fmt.Errorf("store: etcd: %w", err)
	}
	if len(resp.Kvs) > 0 {
		return 0, fmt.Errorf("%w: %s holds %s; a restore goes only into an empty prefix (etcdctl del --prefix %s/ after stopping every replica)", ErrNotEmpty, prefix, resp.Kvs[0].Key, prefix)
	}
	tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k.schema()), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(k.migrating()), "=", 0)).
		Then(clientv3.OpPut(k.migrating(), time.Now().UTC().Format(time.RFC3339))).Commit()
	if err != nil {
		return 0, fmt.Errorf("store: etcd: %w", err)
	}
	if !tr.Succeeded {
		return 0, fmt.Errorf("%w: %s changed while the restore started", ErrNotEmpty, prefix)
	}
	if maxOps <= 0 {
		maxOps = DefaultMaxTxnOps
	}
	var ops []clientv3.Op
	size, n := 0, 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		// Only while the mark is this restore's.
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k.migrating()), "=", tr.Header.Revision)).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("store: etcd: %w", err)
		}
		if !r.Succeeded {
			return fmt.Errorf("store: etcd: %s was changed during the restore", prefix)
		}
		n += len(ops)
		ops, size = ops[:0], 0
		return nil
	}
	_, err = ReadBackup(r, func(key string, v []byte) error {
		if prefix+key == k.migrating() {
			return errors.New("the backup was taken of an unfinished import")
		}
		if len(ops)+1 >= maxOps || size+len(key)+len(v) > maxTxnBytes/2 {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, clientv3.OpPut(prefix+key, string(v)))
		size += len(prefix) + len(key) + len(v)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return n, fmt.Errorf("%w; the prefix %s holds a partial restore that no replica opens: delete it (etcdctl del --prefix %s/) and restore again", err, prefix, prefix)
	}
	if _, err := cli.Delete(ctx, k.migrating()); err != nil {
		return n, fmt.Errorf("store: etcd: removing the restore's mark %s: %w", k.migrating(), err)
	}
	return n, nil
}

// Dial connects to the cluster opts names (endpoints, TLS, credentials),
// for tools that write keys without opening a store (Restore).
func Dial(ctx context.Context, opts Options) (*clientv3.Client, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("store: etcd: no endpoints")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	return clientv3.New(clientv3.Config{Endpoints: opts.Endpoints, DialTimeout: opts.DialTimeout, TLS: opts.TLS,
		Username: opts.Username, Password: opts.Password, Logger: zap.NewNop(), Context: context.WithoutCancel(ctx)})
}
