package daemon

// The last signed tree head the CA published is also kept outside the
// store, in D/sth.json, so that a store rolled back to an older state (an
// old backup restored, a snapshot of the disk, a replaced etcd prefix) is
// refused at start instead of quietly forgetting the certificates issued
// and the revocations made since: the store's log must hold that tree
// head's entries, with its root.
//
// The file is written off the request path: at start, at most every
// treeHeadSaveEvery while the log grows, and at a clean stop after the
// last tree head is signed. A crash loses at most the tree heads of that
// last interval from the file (never from the store): the check is then
// against a slightly older tree head, which the store still holds.

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/internal/fsutil"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

// TreeHeadFile holds the last signed tree head the CA published (JSON, as
// the store keeps it).
const TreeHeadFile = "sth.json"

// LastRevocationFile holds the latest revocation the CA made or saw
// (serial and time): a store restored from before it, which the log
// cannot tell (a revocation appends nothing), still has the certificate
// unrevoked and is refused.
const LastRevocationFile = "last-revocation.json"

// lastRevocation is the content of D/last-revocation.json.
type lastRevocation struct {
	Serial    string    `json:"serial"`
	RevokedAt time.Time `json:"revoked_at"`
}

// treeHeadSaveEvery is how often, at most, D/sth.json is rewritten.
const treeHeadSaveEvery = 500 * time.Millisecond

// readTreeHeadFile reads D/sth.json; nil when there is none.
func readTreeHeadFile(dir string) (*ct.SignedTreeHead, error) {
	path := filepath.Join(dir, TreeHeadFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var sth ct.SignedTreeHead
	if err := json.Unmarshal(b, &sth); err != nil {
		return nil, fmt.Errorf("%s: %w (restore it from a backup of the state directory, or delete it to skip the rollback check once)", path, err)
	}
	return &sth, nil
}

// writeTreeHeadFile atomically replaces D/sth.json with sth.
func writeTreeHeadFile(dir string, sth *ct.SignedTreeHead) error {
	b, err := json.Marshal(sth)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, TreeHeadFile), append(b, '\n'), 0o644)
}

// readLastRevocation reads D/last-revocation.json; nil when there is none.
func readLastRevocation(dir string) (*lastRevocation, error) {
	path := filepath.Join(dir, LastRevocationFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r lastRevocation
	if err := json.Unmarshal(b, &r); err != nil || r.Serial == "" {
		return nil, fmt.Errorf("%s: not a revocation (%v): delete it to skip the revocation check once", path, err)
	}
	return &r, nil
}

// revocationProblem describes how st lacks the revocation in
// D/last-revocation.json, "" when it holds it (or no longer holds the
// certificate: swept after its expiry, or issued after what st holds,
// which the log check tells).
func revocationProblem(ctx context.Context, dir string, st store.Store) (string, error) {
	last, err := readLastRevocation(dir)
	if err != nil || last == nil {
		return "", err
	}
	rec, err := st.Certificate(ctx, last.Serial)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if rec.Revoked() {
		return "", nil
	}
	return fmt.Sprintf("lost a revocation: it holds certificate %s unrevoked, but the CA revoked it at %s (%s)",
		last.Serial, last.RevokedAt.UTC().Format(time.RFC3339), filepath.Join(dir, LastRevocationFile)), nil
}

// checkRollback refuses a store whose issuance log does not hold the tree
// head in D/sth.json (fewer entries, or another root at its size), or
// that holds the certificate of D/last-revocation.json unrevoked, unless
// accept is set: then it logs the loss as an audit line and goes on.
func checkRollback(ctx context.Context, dir, name string, st store.Store, logKey crypto.PublicKey, accept bool, log *slog.Logger) error {
	problem, err := revocationProblem(ctx, dir, st)
	if err != nil {
		return err
	}
	if problem != "" {
		if !accept {
			return fmt.Errorf("%s %s: revocations made since may be lost; restore the newest backup, or start once with --accept-rollback (AGENTCA_ACCEPT_ROLLBACK=true) to accept the loss and revoke again (docs/operations.md)",
				name, problem)
		}
		log.Error("audit: accepting a rolled-back store (--accept-rollback)", "audit", "accept_rollback", "store", name, "found", problem)
		// The store is the reference now.
		if err := os.Remove(filepath.Join(dir, LastRevocationFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	saved, err := readTreeHeadFile(dir)
	if err != nil || saved == nil {
		return err
	}
	path := filepath.Join(dir, TreeHeadFile)
	if err := translog.VerifySTH(logKey, saved); err != nil {
		return fmt.Errorf("%s does not verify with the log key (%v): restore it from a backup of the state directory", path, err)
	}
	problem, err = rollbackProblem(ctx, st, saved)
	if err != nil || problem == "" {
		return err
	}
	at := ct.TimestampToTime(saved.Timestamp).UTC().Format(time.RFC3339)
	if !accept {
		return fmt.Errorf("%s %s, but this CA published a tree head of size %d (root %x, %s; kept in %s): certificates issued and revocations made since may be lost; restore the newest backup (agentca log audit and store check tell more), or start once with --accept-rollback (AGENTCA_ACCEPT_ROLLBACK=true) to accept the loss (docs/operations.md)",
			name, problem, saved.TreeSize, saved.SHA256RootHash[:], at, path)
	}
	log.Error("audit: accepting a rolled-back store (--accept-rollback)", "audit", "accept_rollback", "store", name, "found", problem,
		"published_tree_size", saved.TreeSize, "published_root", fmt.Sprintf("%x", saved.SHA256RootHash[:]), "published_at", at)
	return nil
}

// rollbackProblem describes how the store's log fails to hold saved, ""
// when it holds it.
func rollbackProblem(ctx context.Context, st store.Log, saved *ct.SignedTreeHead) (string, error) {
	ls, err := st.LogState(ctx)
	if err != nil {
		return "", err
	}
	if ls.Size() < saved.TreeSize {
		return fmt.Sprintf("was rolled back: its issuance log holds %d entries", ls.Size()), nil
	}
	root, err := translog.RootAt(ctx, st, saved.TreeSize)
	if err != nil {
		return "", fmt.Errorf("reading the store's log at size %d: %w (run agentca store check)", saved.TreeSize, err)
	}
	if !bytes.Equal(root, saved.SHA256RootHash[:]) {
		return fmt.Sprintf("was replaced or altered: its issuance log at size %d has the root %x", saved.TreeSize, root), nil
	}
	return "", nil
}

// treeHeadSaver keeps D/sth.json at the latest published tree head, and
// D/last-revocation.json at the latest revocation.
type treeHeadSaver struct {
	dir    string
	latest func() *ct.SignedTreeHead
	log    *slog.Logger
	saved  *ct.SignedTreeHead

	revoked      atomic.Pointer[lastRevocation]
	savedRevoked *lastRevocation
}

// noteRevoked records rec's revocation when it is the latest seen; save
// writes it.
func (s *treeHeadSaver) noteRevoked(rec *store.Certificate) {
	if !rec.Revoked() {
		return
	}
	r := &lastRevocation{Serial: rec.Serial, RevokedAt: rec.RevokedAt}
	for {
		cur := s.revoked.Load()
		if cur != nil && !r.RevokedAt.After(cur.RevokedAt) {
			return
		}
		if s.revoked.CompareAndSwap(cur, r) {
			return
		}
	}
}

// save writes the latest tree head and revocation unless they are the
// ones written last.
func (s *treeHeadSaver) save() {
	if r := s.revoked.Load(); r != nil && r != s.savedRevoked {
		b, err := json.Marshal(r)
		if err == nil {
			err = fsutil.WriteFile(filepath.Join(s.dir, LastRevocationFile), append(b, '\n'), 0o644)
		}
		if err != nil {
			s.log.Error("saving the latest revocation", "file", filepath.Join(s.dir, LastRevocationFile), "err", err)
		} else {
			s.savedRevoked = r
		}
	}
	sth := s.latest()
	if sth == nil || sth == s.saved {
		return
	}
	if s.saved != nil && sth.TreeSize == s.saved.TreeSize && sth.SHA256RootHash == s.saved.SHA256RootHash {
		return
	}
	if err := writeTreeHeadFile(s.dir, sth); err != nil {
		s.log.Error("saving the published tree head", "file", filepath.Join(s.dir, TreeHeadFile), "err", err)
		return
	}
	s.saved = sth
}

// run saves every treeHeadSaveEvery until ctx is done. The caller saves
// once more after the log's signer stopped.
func (s *treeHeadSaver) run(ctx context.Context) {
	t := time.NewTicker(treeHeadSaveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.save()
		}
	}
}
