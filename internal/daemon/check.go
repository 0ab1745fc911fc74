package daemon

// agentca store check: the integrity of a stopped store, and agentca
// backup's check of the copy it received.

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/logaudit"
)

// CheckReport is what CheckStore found.
type CheckReport struct {
	Store        string
	Pages        bool // bbolt's page check ran
	Entries      uint64
	Certificates int
	// Problems are the failures, one sentence each; none means sound.
	Problems []string
}

// CheckStore verifies the store D's agentca.json names (for bbolt, with
// the daemon stopped): bbolt's page check, the issuance log against its
// tree head and the certificate records (agentca log audit), the log
// against the tree head the CA last published (D/sth.json), and that
// every record's certificate parses and is the record's. A store that
// cannot be opened at all (missing, empty, another CA's, truncated) is an
// error.
func CheckStore(ctx context.Context, dir string) (*CheckReport, error) {
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return nil, err
	}
	logKey, err := ReadPublicKey(filepath.Join(dir, LogPubFile))
	if err != nil {
		return nil, err
	}
	st, err := OpenStore(ctx, dir, cfg.Storage)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	rep := &CheckReport{Store: storeName(dir, cfg.Storage)}
	if b, ok := st.(*bolt.Store); ok {
		rep.Pages = true
		for _, e := range b.Check(ctx) {
			rep.Problems = append(rep.Problems, e.Error())
		}
		if len(rep.Problems) > 0 {
			// Reading a damaged file further only faults more.
			return rep, nil
		}
	}
	audit, err := logaudit.RunWithOptions(ctx, st, st, logaudit.Options{LogKey: logKey,
		SweptBefore: time.Now().Add(-cfg.Storage.RetentionOrDefault()), Live: cfg.Storage.Type == "etcd"})
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the log audit failed: %v", err))
	} else {
		rep.Entries, rep.Certificates = audit.Entries, audit.Certificates
		rep.Problems = append(rep.Problems, audit.Findings...)
	}
	if saved, err := readTreeHeadFile(dir); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	} else if saved != nil {
		problem, err := rollbackProblem(ctx, st, saved)
		switch {
		case err != nil:
			rep.Problems = append(rep.Problems, err.Error())
		case problem != "":
			rep.Problems = append(rep.Problems, fmt.Sprintf("the store %s, but the CA published a tree head of size %d (%s)",
				problem, saved.TreeSize, filepath.Join(dir, TreeHeadFile)))
		}
	}
	if problem, err := revocationProblem(ctx, dir, st); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	} else if problem != "" {
		rep.Problems = append(rep.Problems, "the store "+problem)
	}
	probs, err := checkRecords(ctx, st)
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("reading the certificate records: %v", err))
	}
	rep.Problems = append(rep.Problems, probs...)
	return rep, nil
}

// checkRecords parses every certificate record's DER and checks that it
// is the record's certificate (serial).
func checkRecords(ctx context.Context, st store.Store) ([]string, error) {
	var probs []string
	after := ""
	for {
		recs, err := st.ListCertificates(ctx, store.ListOptions{After: after, Limit: 1000})
		if err != nil {
			return probs, err
		}
		for _, r := range recs {
			c, err := x509.ParseCertificate(r.DER)
			switch {
			case err != nil:
				probs = append(probs, fmt.Sprintf("certificate %s: its DER does not parse: %v", r.Serial, err))
			case hex.EncodeToString(c.SerialNumber.Bytes()) != r.Serial:
				probs = append(probs, fmt.Sprintf("certificate %s: its DER has the serial %x", r.Serial, c.SerialNumber))
			}
		}
		if len(recs) < 1000 {
			return probs, nil
		}
		after = recs[len(recs)-1].Serial
	}
}
