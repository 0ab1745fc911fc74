package etcd_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/workloads"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// importSource fills a bbolt store with one of everything: used and unused
// join tokens, replay keys, an ended task, a revocation, trust anchors,
// log entries and a saved tree head.
func importSource(t *testing.T) (*bolt.Store, []store.Certificate, [][]byte) {
	t.Helper()
	ctx := context.Background()
	src, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	var toks [][]byte
	for _, name := range []string{"used", "unused"} {
		h := sha256.Sum256([]byte(name))
		toks = append(toks, h[:])
	}
	var recs []store.JoinToken
	for _, h := range toks {
		recs = append(recs, store.JoinToken{Hash: h, SPIFFEID: "spiffe://example.org/a", Provisioner: "join", CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	}
	if err := src.CreateJoinTokens(ctx, recs); err != nil {
		t.Fatal(err)
	}
	var certs []store.Certificate
	for i := range 6 {
		c, l := logged(t)
		iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
		switch i {
		case 1:
			iss.JoinToken = toks[0]
		case 2:
			iss.Once = []string{"aws/i-0123", "aws/i-0123/2"}
		case 3:
			iss.Certificate.Task = "task-1"
		}
		if err := src.Issue(ctx, iss); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, iss.Certificate)
	}
	if _, err := src.Revoke(ctx, certs[4].Serial, 1, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := src.EndTask(ctx, "task-1", now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := src.UpdateAnchors(ctx, func(s *store.AnchorSet) error {
		s.Anchors = append(s.Anchors, store.Anchor{ID: "a1", State: store.AnchorActive, Root: []byte("root"), Issuer: []byte("issuer"), IssuerSKI: "abcd", StagedAt: now, ActivatedAt: now})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.UpdateWorkloads(ctx, func(s *workloads.Set) error {
		s.Definitions = append(s.Definitions, workloads.Definition{ID: "w1", SPIFFEID: "spiffe://example.org/w", Selectors: []string{"unix:uid:1"},
			NodeProvisioners: []string{"join"}, CreatedAt: now})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st, err := src.LogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sth, err := newLogSigner(t).Sign(st, uint64(now.UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.SaveTreeHead(ctx, sth); err != nil {
		t.Fatal(err)
	}
	return src, certs, toks
}

// TestImportFromBolt: a bbolt store's whole contents moved into etcd read
// back the same through every store method, and the CA goes on from
// there: the next entry continues the log, a spent token stays spent, an
// ended task stays ended, replay keys stay spent.
func TestImportFromBolt(t *testing.T) {
	ctx := context.Background()
	src, certs, toks := importSource(t)
	cluster := etcdtest.New(t, 1)
	dst := open(t, cluster, "/imp", 0)
	stats, err := dst.Import(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if want := (etcd.ImportStats{Certificates: 6, Revoked: 1, JoinTokens: 2, ReplayKeys: 2, Tasks: 1, LogEntries: 6, Anchors: true, TreeHead: true}); stats != want {
		t.Fatalf("import stats %+v, want %+v", stats, want)
	}
	// No replica opens the copy before the importer has checked it and
	// finished.
	if _, err := etcd.Open(ctx, etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/imp", MaxTxnOps: 1024}); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("opening an import not finished: %v", err)
	}
	if err := dst.FinishImport(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dst.FinishImport(ctx); err == nil {
		t.Fatal("an import finished twice")
	}
	open(t, cluster, "/imp", 0) // opens now
	same := func(what string, a, b any, errA, errB error) {
		t.Helper()
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: bbolt %+v (%v), etcd %+v (%v)", what, a, errA, b, errB)
		}
	}
	for _, c := range certs {
		a, errA := src.Certificate(ctx, c.Serial)
		b, errB := dst.Certificate(ctx, c.Serial)
		same("certificate "+c.Serial, a, b, errA, errB)
	}
	la, errA := src.ListCertificates(ctx, store.ListOptions{})
	lb, errB := dst.ListCertificates(ctx, store.ListOptions{})
	same("certificate list", la, lb, errA, errB)
	ra, errA := src.Revocations(ctx, "abcd", now)
	rb, errB := dst.Revocations(ctx, "abcd", now)
	same("revocations", ra, rb, errA, errB)
	if len(rb) != 1 {
		t.Fatalf("%d revocations, want 1", len(rb))
	}
	for _, h := range toks {
		a, errA := src.JoinToken(ctx, h)
		b, errB := dst.JoinToken(ctx, h)
		same("join token", a, b, errA, errB)
	}
	for _, k := range []string{"aws/i-0123", "aws/i-0123/2"} {
		a, errA := src.ReplayKey(ctx, k)
		b, errB := dst.ReplayKey(ctx, k)
		same("replay key "+k, a, b, errA, errB)
	}
	aa, errA := src.Anchors(ctx)
	ab, errB := dst.Anchors(ctx)
	same("anchors", aa, ab, errA, errB)
	wa, errA := src.Workloads(ctx)
	wb, errB := dst.Workloads(ctx)
	if errA == nil && len(wa.Definitions) != 1 {
		t.Fatalf("the source has %d workload definitions", len(wa.Definitions))
	}
	same("workloads", wa, wb, errA, errB)
	sa, errA := src.IssuerStats(ctx, "abcd", now)
	sb, errB := dst.IssuerStats(ctx, "abcd", now)
	same("issuer stats", sa, sb, errA, errB)
	ta, errA := src.TreeHead(ctx)
	tb, errB := dst.TreeHead(ctx)
	same("tree head", ta, tb, errA, errB)
	sta, errA := src.LogState(ctx)
	stb, errB := dst.LogState(ctx)
	same("log state", sta.Root(), stb.Root(), errA, errB)
	ea, errA := src.LogEntries(ctx, 0, 6)
	eb, errB := dst.LogEntries(ctx, 0, 6)
	same("log entries", ea, eb, errA, errB)
	for i := range uint64(6) {
		pa, errA := translog.InclusionProof(ctx, src, i, 6)
		pb, errB := translog.InclusionProof(ctx, dst, i, 6)
		same("inclusion proof", pa, pb, errA, errB)
	}

	// The CA goes on.
	c, l := logged(t)
	iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l, JoinToken: toks[1]}
	if err := dst.Issue(ctx, iss); err != nil || iss.Certificate.LogIndex != 6 {
		t.Fatalf("issuance after the import: index %d, %v; want 6", iss.Certificate.LogIndex, err)
	}
	for _, tc := range []struct {
		name string
		edit func(*store.Issuance)
		want error
	}{
		{"spent join token", func(i *store.Issuance) { i.JoinToken = toks[0] }, store.ErrTokenInvalid},
		{"spent replay key", func(i *store.Issuance) { i.Once = []string{"aws/i-0123"} }, store.ErrReplay},
		{"ended task", func(i *store.Issuance) { i.Certificate.Task = "task-1" }, store.ErrTaskEnded},
		{"serial taken", func(i *store.Issuance) { i.Certificate.Serial = certs[0].Serial }, store.ErrDuplicateSerial},
	} {
		c, l := logged(t)
		iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
		tc.edit(iss)
		if err := dst.Issue(ctx, iss); !errors.Is(err, tc.want) {
			t.Fatalf("%s after the import: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Retention works on what was imported.
	swept, err := dst.Sweep(ctx, now.Add(2*time.Hour), 100)
	if err != nil || swept.Certificates != 7 || swept.JoinTokens != 2 {
		t.Fatalf("sweep after the import: %+v, %v", swept, err)
	}

	// A prefix holding a CA is refused.
	if _, err := dst.Import(ctx, src); !errors.Is(err, etcd.ErrNotEmpty) {
		t.Fatalf("import into a used prefix: %v, want ErrNotEmpty", err)
	}
}

// failingExporter reports some items, then fails.
type failingExporter struct{ src store.Exporter }

func (f failingExporter) Export(ctx context.Context, fn func(store.Item) error) error {
	n := 0
	return f.src.Export(ctx, func(it store.Item) error {
		if n++; n == 5 {
			return errors.New("the disk went away")
		}
		return fn(it)
	})
}

// TestImportInterrupted: an import that fails midway leaves its prefix
// marked, and no store (no replica) opens it. Another import, started
// after the prefix was deleted, is not written to by the first.
func TestImportInterrupted(t *testing.T) {
	ctx := context.Background()
	src, _, _ := importSource(t)
	cluster := etcdtest.New(t, 1)
	dst := open(t, cluster, "/int", 0)
	if _, err := dst.Import(ctx, failingExporter{src}); err == nil || !strings.Contains(err.Error(), "the disk went away") {
		t.Fatalf("interrupted import: %v", err)
	}
	_, err := etcd.Open(ctx, etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/int", MaxTxnOps: 1024})
	if err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("opening a prefix left half imported: %v", err)
	}
	// The operator deletes the prefix and imports again through another
	// store; the first one's mark is not the new one.
	if _, err := dst.Client().Delete(ctx, "/int/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	again := open(t, cluster, "/int", 0)
	if _, err := again.Import(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.FinishImport(ctx); err == nil {
		t.Fatal("the first import finished the second one's")
	}
	if err := again.FinishImport(ctx); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkImport: agentca migrate's copy of a bbolt store of 10,000
// logged certificates (a fifth revoked, with as many used join tokens) into
// a single-member etcd (fsync on), at etcd's default max_txn_ops and at
// 1024. Not in make bench
// (-short): go test -run '^$' -bench Import ./store/etcd/
func BenchmarkImport(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 10,000-certificate store")
	}
	ctx := context.Background()
	src, err := bolt.Open(filepath.Join(b.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	const n = 10000
	var toks []store.JoinToken
	for i := range n / 5 {
		h := sha256.Sum256([]byte{byte(i), byte(i >> 8), 'b'})
		toks = append(toks, store.JoinToken{Hash: h[:], SPIFFEID: "spiffe://example.org/a", Provisioner: "join", CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	}
	if err := src.CreateJoinTokens(ctx, toks); err != nil {
		b.Fatal(err)
	}
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			c, l := benchLogged(i)
			iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
			if i%5 == 0 {
				iss.JoinToken = toks[i/5].Hash
			}
			if err := src.Issue(ctx, iss); err != nil {
				errs <- err
				return
			}
			if i%5 == 1 {
				if _, err := src.Revoke(ctx, c.Serial, 1, now); err != nil {
					errs <- err
				}
			}
		}()
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	for _, ops := range []int{etcd.DefaultMaxTxnOps, 1024} {
		b.Run(fmt.Sprintf("max_txn_ops=%d", ops), func(b *testing.B) {
			cluster := etcdtest.NewWith(b, 1, etcdtest.Options{MaxTxnOps: uint(ops)})
			b.ResetTimer()
			for i := range b.N {
				dst, err := etcd.Open(ctx, etcd.Options{Endpoints: cluster.Endpoints(), Prefix: fmt.Sprintf("/bench%d", i), MaxTxnOps: ops})
				if err != nil {
					b.Fatal(err)
				}
				st, err := dst.Import(ctx, src)
				if err != nil || st.Certificates != n {
					b.Fatalf("import: %+v, %v", st, err)
				}
				dst.Close()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "certificates/s")
		})
	}
}

// benchLogged is logged without a *testing.T: certificate i.
func benchLogged(i int) (store.Certificate, *translog.Leaf) {
	sn := fmt.Sprintf("%032x", i+1)
	der := append([]byte{0x30, 0x82}, []byte(sn)...)
	c := store.Certificate{Serial: sn, SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: now, NotAfter: now.Add(time.Hour), DER: der}
	l, err := translog.NewLeaf(c.DER, uint64(now.UnixMilli()))
	if err != nil {
		panic(err)
	}
	return c, l
}
