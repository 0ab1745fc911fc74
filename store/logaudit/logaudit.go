// Package logaudit checks a store's issuance log offline, against itself,
// against its last signed tree head and against the certificate table: the
// check `agentca log audit` runs on a stopped daemon's state directory.
//
// It recomputes the Merkle tree from the stored entries alone and reports
// every divergence it finds: an entry that does not decode, a leaf-hash
// index that points elsewhere, a stored tree state or stored node that is
// not the entries' tree, a signed tree head that does not verify or whose
// root the entries do not give, a certificate record without its entry,
// an entry without its certificate record (unless retention removed the
// record: see Options.SweptBefore). It does not judge whether a
// certificate should have been issued, and it cannot see what was removed
// from the end of the log after the last saved tree head (a relying party
// that kept a later tree head can: `agentca log verify`).
package logaudit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Report is the outcome of an audit.
type Report struct {
	// Entries is the number of entries the stored tree state counts.
	Entries uint64
	// Certificates is the number of certificate records.
	Certificates int
	// Root is the root hash recomputed from the entries.
	Root []byte
	// TreeHead is the last saved signed tree head, nil if none.
	TreeHead *ct.SignedTreeHead
	// Swept counts the entries whose record is gone because their
	// certificate expired before Options.SweptBefore (retention).
	Swept int
	// Findings are the divergences, each one sentence naming what
	// diverged; none means the log is intact.
	Findings []string
}

// Options tune an audit.
type Options struct {
	// LogKey is the log's public key (D/log.pub.pem); it checks the
	// saved tree head's signature.
	LogKey crypto.PublicKey
	// SweptBefore is now minus the store's retention: the records of
	// certificates that expired before it may have been removed
	// (store.Store's Sweep), so an entry of such a certificate without its
	// record is expected, not a finding. Zero expects every record.
	SweptBefore time.Time
	// Live audits a store that is being written to (etcd, with the
	// replicas serving): the audit covers the log up to the size it
	// reads first, and records of certificates appended after that are
	// skipped rather than reported as naming entries beyond the log.
	Live bool
}

// maxPerKind bounds the findings of one kind listed one by one; the rest
// are counted.
const maxPerKind = 20

// page is how many entries, records or nodes are read at once.
const page = 4096

// Records lists the certificate records the audit checks against the
// log's entries.
type Records interface {
	ListCertificates(ctx context.Context, opts store.ListOptions) ([]store.Certificate, error)
}

type auditor struct {
	ctx         context.Context
	s           store.Log
	recs        Records
	rep         *Report
	counts      map[string]int
	sweptBefore time.Time
	live        bool
}

// finding records a divergence of kind (findings of one kind beyond
// maxPerKind are only counted).
func (a *auditor) finding(kind, format string, args ...any) {
	a.counts[kind]++
	if a.counts[kind] <= maxPerKind {
		a.rep.Findings = append(a.rep.Findings, fmt.Sprintf(format, args...))
	}
}

// entryInfo is what the audit keeps of each entry to check the records.
type entryInfo struct {
	certHash  [sha256.Size]byte
	timestamp uint64
	valid     bool
	claimed   bool // a record names this entry
}

// Run audits the log s and the certificate records recs (one store,
// usually, in both roles). logKey is the log's public key (D/log.pub.pem); it checks
// the saved tree head's signature. An error means the audit could not run
// (the store cannot be read); divergences are in the Report.
func Run(ctx context.Context, s store.Log, recs Records, logKey crypto.PublicKey) (*Report, error) {
	return RunWithOptions(ctx, s, recs, Options{LogKey: logKey})
}

// RunWithOptions is Run with the retention taken into account.
func RunWithOptions(ctx context.Context, s store.Log, recs Records, opts Options) (*Report, error) {
	logKey := opts.LogKey
	a := &auditor{ctx: ctx, s: s, recs: recs, rep: &Report{}, counts: map[string]int{}, sweptBefore: opts.SweptBefore, live: opts.Live}
	// The tree head first: on a live store a later one may be saved
	// while the audit reads, and it must not be larger than the log the
	// audit sees.
	sth, sthErr := s.TreeHead(ctx)
	st, err := s.LogState(ctx)
	if err != nil {
		a.finding("state", "the stored tree state cannot be read: %v", err)
	}
	a.rep.Entries = st.Size()

	// 1. Recompute the tree from the entries alone.
	var mem translog.MemoryNodes
	var tree translog.State
	infos := make([]entryInfo, 0, st.Size())
	complete := true
	for start := uint64(0); start < st.Size(); start += page {
		inputs, err := s.LogEntries(ctx, start, min(start+page, st.Size()))
		if want := min(page, st.Size()-start); err == nil && a.live && uint64(len(inputs)) > want {
			inputs = inputs[:want] // entries appended after the size was read
		}
		if err == nil && uint64(len(inputs)) != min(page, st.Size()-start) {
			err = fmt.Errorf("%d entries returned from index %d, want %d", len(inputs), start, min(page, st.Size()-start))
		}
		if err != nil {
			a.finding("entries", "the entries from index %d on cannot be read: %v", start, err)
			complete = false
			break
		}
		hashes := make([][]byte, len(inputs))
		for i, in := range inputs {
			index := start + uint64(i)
			var info entryInfo
			leaf, err := translog.ParseLeaf(in)
			if err != nil {
				a.finding("malformed", "entry %d does not decode as an x509_entry leaf: %v", index, err)
				hashes[i] = rfc6962.DefaultHasher.HashLeaf(in)
			} else {
				hashes[i] = leaf.Hash
				info = entryInfo{certHash: sha256.Sum256(leaf.Certificate()), timestamp: leaf.Timestamp(), valid: true}
			}
			infos = append(infos, info)
			got, err := s.LogIndex(ctx, hashes[i])
			switch {
			case errors.Is(err, store.ErrNotFound):
				a.finding("index", "entry %d: its leaf hash %x is not in the hash index (get-proof-by-hash cannot find it)", index, hashes[i])
			case err != nil:
				return nil, err
			case got != index:
				a.finding("index", "entry %d: the hash index points its leaf hash to index %d", index, got)
			}
		}
		if tree, err = tree.Append(hashes, mem.Put); err != nil {
			return nil, err
		}
	}
	a.rep.Root = tree.Root()
	if complete && !bytes.Equal(tree.Root(), st.Root()) {
		a.finding("state", "the stored tree state (size %d, root %x) is not the tree of the entries (root %x)", st.Size(), st.Root(), tree.Root())
	}

	// 2. The stored nodes, from which proofs are served.
	if complete {
		if err := a.nodes(&mem, tree.Size()); err != nil {
			return nil, err
		}
	}

	// 3. The last signed tree head.
	if err := a.treeHead(&mem, tree.Size(), complete, logKey, sth, sthErr); err != nil {
		return nil, err
	}

	// 4. The certificate table against the entries.
	if err := a.certificates(infos, complete); err != nil {
		return nil, err
	}
	for kind, n := range a.counts {
		if n > maxPerKind {
			a.rep.Findings = append(a.rep.Findings, fmt.Sprintf("… and %d more findings of the kind %q", n-maxPerKind, kind))
		}
	}
	return a.rep, nil
}

// nodes compares every stored node of the tree of size with the
// recomputed one.
func (a *auditor) nodes(mem *translog.MemoryNodes, size uint64) error {
	for level := uint(0); level < 64 && size>>level > 0; level++ {
		n := size >> level
		for start := uint64(0); start < n; start += page {
			ids := make([]compact.NodeID, 0, min(page, n-start))
			for i := start; i < min(start+page, n); i++ {
				ids = append(ids, compact.NewNodeID(level, i))
			}
			want, err := mem.Nodes(a.ctx, ids)
			if err != nil {
				return err
			}
			got, err := a.s.Nodes(a.ctx, ids)
			if err != nil {
				// Find the missing ones one by one.
				for i, id := range ids {
					h, err := a.s.Nodes(a.ctx, ids[i:i+1])
					switch {
					case errors.Is(err, translog.ErrNodeNotFound):
						a.finding("nodes", "stored tree node level %d index %d is missing (proofs through it fail)", id.Level, id.Index)
					case err != nil:
						return err
					case !bytes.Equal(h[0], want[i]):
						a.finding("nodes", "stored tree node level %d index %d is not the entries' (proofs through it do not verify)", id.Level, id.Index)
					}
				}
				continue
			}
			for i, id := range ids {
				if !bytes.Equal(got[i], want[i]) {
					a.finding("nodes", "stored tree node level %d index %d is not the entries' (proofs through it do not verify)", id.Level, id.Index)
				}
			}
		}
	}
	return nil
}

func (a *auditor) treeHead(mem *translog.MemoryNodes, size uint64, complete bool, logKey crypto.PublicKey, sth *ct.SignedTreeHead, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		if size > 0 {
			a.finding("sth", "no signed tree head is saved for a log of %d entries", size)
		}
		return nil
	case err != nil:
		a.finding("sth", "the saved signed tree head cannot be read: %v", err)
		return nil
	}
	a.rep.TreeHead = sth
	if err := translog.VerifySTH(logKey, sth); err != nil {
		a.finding("sth", "the saved signed tree head (size %d) does not verify with the log key: %v", sth.TreeSize, err)
	}
	if sth.TreeSize > size {
		a.finding("sth", "the saved signed tree head is of size %d but the log holds %d entries: entries were removed", sth.TreeSize, size)
		return nil
	}
	if !complete {
		return nil
	}
	root, err := translog.RootAt(a.ctx, mem, sth.TreeSize)
	if err != nil {
		return err
	}
	if !bytes.Equal(root, sth.SHA256RootHash[:]) {
		a.finding("sth", "the entries' tree at size %d has root %x, but the signed tree head says %x: entries among the first %d were altered since it was signed",
			sth.TreeSize, root, sth.SHA256RootHash[:], sth.TreeSize)
	}
	return nil
}

// certificates checks every record against its entry, and every entry
// against a record.
func (a *auditor) certificates(infos []entryInfo, complete bool) error {
	after := ""
	logged := 0
	for {
		recs, err := a.recs.ListCertificates(a.ctx, store.ListOptions{After: after, Limit: 1000})
		if err != nil {
			return err
		}
		for _, r := range recs {
			a.rep.Certificates++
			after = r.Serial
			if !r.Logged() {
				a.finding("unlogged", "certificate %s (%s) has no log entry", r.Serial, r.SPIFFEID)
				continue
			}
			logged++
			if r.LogIndex >= uint64(len(infos)) {
				if a.live {
					logged-- // appended after the audit read the log's size
					continue
				}
				if complete {
					a.finding("unlogged", "certificate %s (%s) names log entry %d, beyond the log's %d entries", r.Serial, r.SPIFFEID, r.LogIndex, len(infos))
				}
				continue
			}
			e := &infos[r.LogIndex]
			switch {
			case e.claimed:
				a.finding("records", "certificate %s (%s) names log entry %d, which another record names too", r.Serial, r.SPIFFEID, r.LogIndex)
			case !e.valid:
				// already reported as malformed
			case e.certHash != sha256.Sum256(r.DER):
				a.finding("records", "certificate %s (%s): log entry %d holds another certificate", r.Serial, r.SPIFFEID, r.LogIndex)
			case e.timestamp != r.LogTimestamp:
				a.finding("records", "certificate %s (%s): log entry %d has timestamp %d, the record %d", r.Serial, r.SPIFFEID, r.LogIndex, e.timestamp, r.LogTimestamp)
			}
			e.claimed = true
		}
		if len(recs) < 1000 {
			break
		}
	}
	for i := range infos {
		if infos[i].claimed {
			continue
		}
		serial := "?"
		if ins, err := a.s.LogEntries(a.ctx, uint64(i), uint64(i)+1); err == nil && len(ins) == 1 {
			if leaf, err := translog.ParseLeaf(ins[0]); err == nil {
				if c, err := x509.ParseCertificate(leaf.Certificate()); err == nil {
					serial = hex.EncodeToString(c.SerialNumber.Bytes())
					if c.NotAfter.Before(a.sweptBefore) {
						// Expired past the retention: its record
						// was swept; the log keeps the entry.
						a.rep.Swept++
						continue
					}
				}
			}
		}
		a.finding("orphans", "log entry %d (certificate serial %s) has no certificate record naming it", i, serial)
	}
	if complete && logged+a.rep.Swept != len(infos) {
		a.finding("count", "%d certificate records are logged (and %d were swept) but the log holds %d entries", logged, a.rep.Swept, len(infos))
	}
	return nil
}
