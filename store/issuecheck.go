package store

// Issue's checks: what every backend verifies inside its issuing
// transaction before it writes anything. The backends differ in how they
// read (store/bolt in its bbolt transaction, store/etcd from the batch
// whose keys its transaction compares); the rules and their order are
// here, once.

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/agentca/agentca/translog"
)

// Record is a kind of record IssueReader.Exists is asked about.
type Record int

// The records Issue's checks expect absent.
const (
	// CertRecord is a certificate record, by serial.
	CertRecord Record = iota
	// EndedTask is the mark EndTask leaves, by task.
	EndedTask
	// ReplayRecord is a replay key, by key.
	ReplayRecord
	// LoggedLeaf is an issuance-log entry, by its leaf hash (the hash's
	// bytes as a string).
	LoggedLeaf
)

// IssueReader reads what CheckIssue needs, inside a backend's issuing
// transaction. Cert, Renewal and JoinToken return nil and no error for a
// record that does not exist.
type IssueReader interface {
	LineageReader
	// Exists reports whether a record of kind is stored under key.
	Exists(kind Record, key string) (bool, error)
	// JoinToken returns the join token stored under hash.
	JoinToken(hash []byte) (*JoinToken, error)
}

// Checked is what CheckIssue found for the writes that follow its checks.
type Checked struct {
	// Token is iss.JoinToken's token as Issue writes it back, used by
	// the certificate at iss.Now; nil without a join token.
	Token *JoinToken
	// Renewal is the record Issue writes under the parent's serial
	// (iss.Certificate.RenewedFrom); nil when iss is not a renewal.
	Renewal *Renewal
}

// CheckIssue makes Issue's checks of iss, whose certificate's serial the
// backend records as serial, in this order: the serial is new
// (ErrDuplicateSerial), the task has not ended (ErrTaskEnded), the join
// token is usable (ErrTokenInvalid), the replay keys are unused and
// distinct (ErrReplay), a renewal's parent may be renewed (CheckRenewal's
// refusals), and the log does not hold the leaf yet (ErrDuplicateSerial).
// A failed check is returned as refused, the error Issue answers with
// nothing written; err is a read that failed. The order is the order of
// the reads, which store/etcd compares in its transaction.
func CheckIssue(r IssueReader, iss *Issuance, serial string) (c Checked, refused, err error) {
	if ok, err := r.Exists(CertRecord, serial); err != nil || ok {
		return c, refusedIf(ok, ErrDuplicateSerial), err
	}
	if t := iss.Certificate.Task; t != "" {
		if ok, err := r.Exists(EndedTask, t); err != nil || ok {
			return c, refusedIf(ok, ErrTaskEnded), err
		}
	}
	if iss.JoinToken != nil {
		tok, err := r.JoinToken(iss.JoinToken)
		if err != nil {
			return c, nil, err
		}
		if tok == nil || !tok.Usable(iss.Certificate.SPIFFEID, iss.Certificate.Provisioner, iss.Now) {
			return c, ErrTokenInvalid, nil
		}
		tok.UsedBy, tok.UsedAt = serial, iss.Now.UTC()
		c.Token = tok
	}
	for i, k := range iss.Once {
		ok, err := r.Exists(ReplayRecord, k)
		if err != nil {
			return c, nil, err
		}
		for _, earlier := range iss.Once[:i] {
			ok = ok || earlier == k
		}
		if ok {
			return c, ErrReplay, nil
		}
	}
	if iss.Certificate.RenewedFrom != "" {
		if err := CheckRenewal(r, iss); err != nil {
			if errors.Is(err, ErrRevoked) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrRenewalReused) ||
				ExistingChild(err) != "" {
				return c, err, nil
			}
			return c, nil, err
		}
		rec := iss.Certificate
		rec.Serial = serial
		ren := NewRenewal(&rec)
		c.Renewal = &ren
	}
	if leaf := iss.LogLeaf; leaf != nil {
		if ok, err := r.Exists(LoggedLeaf, string(leaf.Hash)); err != nil || ok {
			return c, refusedIf(ok, fmt.Errorf("%w: the log already holds this certificate", ErrDuplicateSerial)), err
		}
	}
	return c, nil, nil
}

// CheckLogLeaf is the check every backend's Issue makes before its
// transaction: the issuance-log leaf, when there is one, is rec's
// certificate and has a timestamp.
func CheckLogLeaf(rec *Certificate, leaf *translog.Leaf) error {
	if leaf != nil && (leaf.Timestamp() == 0 || !bytes.Equal(leaf.Certificate(), rec.DER)) {
		return errors.New("store: the log leaf is not the certificate's (or has no timestamp)")
	}
	return nil
}

// refusedIf is refusal when found, else nil.
func refusedIf(found bool, refusal error) error {
	if found {
		return refusal
	}
	return nil
}
