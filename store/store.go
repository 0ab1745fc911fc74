// Package store defines what agentca persists and the interface every
// storage backend implements: certificate records, join tokens, replay
// keys and the issuance log. Backends live in subpackages (store/bolt);
// store/storetest is the conformance suite each of them must pass.
//
// The central operation is Issue: it records a certificate, appends it to
// the issuance log and consumes whatever the attestation used up (a join
// token, replay keys) in one transaction, so either all of it happens or
// none of it does. Backends group concurrent Issue calls into one
// transaction and one fsync.
//
// The store keeps the log's data (see package translog): each leaf's input
// by index, each index by leaf hash, every node the appends fixed, and the
// compact tree state. It does not sign anything.
package store

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/workloads"
	ct "github.com/google/certificate-transparency-go"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotFound: no record under that key.
	ErrNotFound = errors.New("store: not found")
	// ErrDuplicateSerial: a certificate with that serial is already
	// recorded.
	ErrDuplicateSerial = errors.New("store: duplicate serial")
	// ErrTokenInvalid: the join token is unknown, expired, already used,
	// or bound to another identity. Deliberately one error, so callers
	// cannot tell the cases apart.
	ErrTokenInvalid = errors.New("store: join token invalid")
	// ErrReplay: a replay key was already used.
	ErrReplay = errors.New("store: replay key already used")
	// ErrDuplicateToken: a join token with that hash already exists.
	ErrDuplicateToken = errors.New("store: duplicate join token")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store: closed")
	// ErrTreeHead: a signed tree head does not fit the stored log (see
	// Log.SaveTreeHead).
	ErrTreeHead = errors.New("store: tree head does not fit the log")
	// ErrReadOnly: the store was opened read-only.
	ErrReadOnly = errors.New("store: read-only")
	// ErrTaskEnded: the certificate names a task that was ended
	// (EndTask).
	ErrTaskEnded = errors.New("store: task ended")
	// ErrNoStore: the store is missing or empty where one was expected
	// (a store is created only by agentca init or migrate).
	ErrNoStore = errors.New("store: no store")
	// ErrDamaged: the store's data cannot be read (a truncated or
	// corrupted file); the API answers 503.
	ErrDamaged = errors.New("store: damaged")
)

// Certificate is the record of one issued certificate.
type Certificate struct {
	// Serial is the lowercase hex of the serial number's big-endian bytes.
	Serial      string    `json:"serial"`
	SPIFFEID    string    `json:"spiffe_id"`
	DNSNames    []string  `json:"dns_names,omitempty"`
	Provisioner string    `json:"provisioner"`
	IssuerSKI   string    `json:"issuer_ski"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	DER         []byte    `json:"der"`
	// RenewedFrom is the serial of the certificate this one renewed.
	RenewedFrom string `json:"renewed_from,omitempty"`
	// RevokedAt is when the certificate was revoked; zero while it is
	// not. A revoked certificate cannot renew.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// RevocationReason is the RFC 5280 CRLReason code.
	RevocationReason int `json:"revocation_reason,omitempty"`
	// LogIndex is the certificate's index in the issuance log and
	// LogTimestamp its leaf's timestamp (milliseconds since the Unix
	// epoch). The store sets both when Issue appends the certificate's
	// leaf; LogTimestamp is zero for a record issued without a leaf.
	LogIndex     uint64 `json:"log_index,omitempty"`
	LogTimestamp uint64 `json:"log_timestamp,omitempty"`
	// Task is the task identifier the agent named at issuance, if any;
	// ending the task revokes every certificate issued for it.
	Task string `json:"task,omitempty"`
	// PublicKeySHA256 is the SHA-256 (hex) of the certificate's
	// SubjectPublicKeyInfo: how a retried issuance or renewal is
	// recognised (lineage.go).
	PublicKeySHA256 string `json:"public_key_sha256,omitempty"`
	// Claims are the attested claims the certificate was issued on,
	// carried to its renewals, for the runtime policy at renewal.
	Claims map[string]string `json:"claims,omitempty"`
	// Parent is the serial of the node certificate whose agent asked for
	// this workload SVID; revoking the node revokes it.
	Parent string `json:"parent,omitempty"`
}

// Logged reports whether the certificate was appended to the issuance log.
func (c *Certificate) Logged() bool { return c.LogTimestamp != 0 }

// Revoked reports whether the certificate has been revoked.
func (c *Certificate) Revoked() bool { return !c.RevokedAt.IsZero() }

// JoinToken is the stored form of a join token: only its SHA-256.
type JoinToken struct {
	Hash        []byte    `json:"hash"`
	SPIFFEID    string    `json:"spiffe_id"`
	Provisioner string    `json:"provisioner"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	// UsedBy is the serial of the certificate the token was exchanged
	// for; empty while unused.
	UsedBy string    `json:"used_by,omitempty"`
	UsedAt time.Time `json:"used_at,omitzero"`
}

// Usable reports whether t can still be exchanged for a certificate naming
// spiffeID through provisioner at time now.
func (t *JoinToken) Usable(spiffeID, provisioner string, now time.Time) bool {
	return t.UsedBy == "" && now.Before(t.ExpiresAt) && t.SPIFFEID == spiffeID && t.Provisioner == provisioner
}

// Issuance is one certificate to record and what its attestation consumes.
type Issuance struct {
	Certificate Certificate
	// JoinToken, when set, is the SHA-256 of a join token that must be
	// usable for Certificate's SPIFFE ID and provisioner at Now; it is
	// marked used in the same transaction.
	JoinToken []byte
	// Once are replay keys (a JWT's jti, an instance ID) that must not
	// exist; they are created in the same transaction.
	Once []string
	// Now is the time of the decision, for token expiry.
	Now time.Time
	// LogLeaf, when set, is the certificate's issuance-log leaf
	// (translog.NewLeaf of Certificate.DER, with a non-zero timestamp).
	// Issue appends it to the log in the same transaction, after every
	// check passed, and sets Certificate.LogIndex and LogTimestamp (in
	// the record and in this Issuance). The CA always sets it; a record
	// without a leaf is one the log audit reports.
	LogLeaf *translog.Leaf
}

// Revocation is one entry of an issuer's revocation list.
type Revocation struct {
	Serial    string    `json:"serial"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    int       `json:"reason"`
	// NotAfter of the revoked certificate: the entry leaves the CRL once
	// the certificate has expired.
	NotAfter time.Time `json:"not_after"`
}

// ListOptions select certificates for ListCertificates.
type ListOptions struct {
	// After is an exclusive lower bound on the serial, for paging.
	After string
	// SPIFFEID, when set, keeps only certificates naming it.
	SPIFFEID string
	// Task, when set, keeps only certificates issued for that task.
	Task string
	// Parent, when set, keeps only the workload SVIDs of that node
	// certificate.
	Parent string
	// Workloads keeps only workload SVIDs (records with a Parent). The
	// backends skip a record whose stored JSON has no "parent" key
	// without decoding it, so listing a store's few workload SVIDs costs
	// a byte search per other record rather than a decode.
	Workloads bool
	// Limit bounds the number of records returned; zero means 1000.
	Limit int
}

// Log is the issuance log's storage as the CT API, the tree head signer
// and the audit read it. Appends happen only through Store.Issue; tree
// heads are saved through TreeHeadSaver.
type Log interface {
	// Nodes reads stored tree nodes (translog.NodeReader), for proofs
	// and past roots.
	translog.NodeReader
	// LogState returns the log's compact tree state after the last
	// committed append (the empty tree when nothing was logged).
	LogState(ctx context.Context) (translog.State, error)
	// LogEntries returns the leaf inputs (translog.Leaf.Input) of the
	// entries with index in [start, end), cut at the log's size; none
	// when start is at or past it.
	LogEntries(ctx context.Context, start, end uint64) ([][]byte, error)
	// LogIndex returns the index of the entry whose RFC 6962 leaf hash
	// is leafHash, or ErrNotFound.
	LogIndex(ctx context.Context, leafHash []byte) (uint64, error)
	// TreeHead returns the last signed tree head saved, or ErrNotFound.
	TreeHead(ctx context.Context) (*ct.SignedTreeHead, error)
}

// TreeHeadSaver keeps the issuance log's signed tree head: the tree head
// signer's one write.
type TreeHeadSaver interface {
	// SaveTreeHead keeps sth as the last signed tree head. It refuses
	// (ErrTreeHead) a tree head for a size the log has not reached,
	// one smaller than the saved one, or one of the saved size with
	// another root.
	SaveTreeHead(ctx context.Context, sth *ct.SignedTreeHead) error
}

// Store is what every backend implements, and what only the backends,
// the conformance suite (store/storetest) and the code that opens a
// backend see. Every other component is handed the few methods of its
// role, in an interface of its own declared where it is used (see
// docs/design.md).
type Store interface {
	Log
	TreeHeadSaver
	// Issue records iss atomically: the certificate, its log entry
	// (iss.LogLeaf), the join token's consumption and the replay keys,
	// or nothing. An error wrapping ErrUnavailable may leave the outcome
	// unknown (store/etcd reads the record back first, and reports
	// success when the issuance was committed). It returns ErrDuplicateSerial, ErrTokenInvalid or
	// ErrReplay when a check fails, and ErrTaskEnded when
	// iss.Certificate.Task names an ended task (checked in the same
	// transaction). A renewal (iss.Certificate.RenewedFrom) is checked
	// in the transaction too (CheckRenewal): ErrRevoked for a revoked
	// parent, a *RenewalReusedError (the lineage then revoked) for a
	// second renewal onto another key. A retry of an issuance or
	// renewal already made for the same key gets an *AlreadyIssuedError
	// naming its certificate (FindIssued, FindRenewed).
	Issue(ctx context.Context, iss *Issuance) error
	// EndTask records that task ended at at: from then on Issue refuses
	// every certificate naming it. Ending an ended task changes nothing.
	// The caller then revokes the task's certificates
	// (ListCertificates with Task); none can be added after EndTask
	// returns.
	EndTask(ctx context.Context, task string, at time.Time) error
	// TaskEnded reports whether EndTask recorded task's end.
	TaskEnded(ctx context.Context, task string) (bool, error)
	// Certificate returns the record for serial, or ErrNotFound.
	Certificate(ctx context.Context, serial string) (*Certificate, error)
	// ListCertificates returns records in serial order.
	ListCertificates(ctx context.Context, opts ListOptions) ([]Certificate, error)
	// Revoke marks the certificate revoked at time at for reason (an RFC
	// 5280 CRLReason code) and returns its record; every certificate
	// renewed from it (its descendants) is revoked with it, in the same
	// transaction. Revoking a revoked certificate returns the first
	// revocation. It returns ErrNotFound for an unknown serial.
	Revoke(ctx context.Context, serial string, reason int, at time.Time) (*Certificate, error)
	// RevokeLineage is Revoke that returns every record it revoked now,
	// and, with ancestors, revokes the unexpired certificates serial was
	// renewed from too (store.Lineage), in one transaction. The first
	// record returned is serial's own, revoked now or before; the
	// others are those revoked by this call.
	RevokeLineage(ctx context.Context, serial string, reason int, at time.Time, ancestors bool) ([]Certificate, error)
	// Revocations returns the revocations of certificates issued by
	// issuerSKI that are unexpired at now, in serial order.
	Revocations(ctx context.Context, issuerSKI string, now time.Time) ([]Revocation, error)
	// ReplayKey returns the serial of the certificate whose issuance
	// created the replay key, or ErrNotFound.
	ReplayKey(ctx context.Context, key string) (string, error)
	// DeleteReplayKey removes a replay key (an operator clearing a
	// trust-on-first-use entry so the instance may enroll again). It
	// returns ErrNotFound for a key that does not exist.
	DeleteReplayKey(ctx context.Context, key string) error
	// CreateJoinTokens stores new tokens atomically, or none of them.
	// store/etcd is the exception for large requests: it creates them in
	// transactions of at most --max-txn-ops/2 tokens and deletes the
	// ones created when a later transaction fails; should that cleanup
	// fail too (etcd unavailable), some tokens of a request reported as
	// failed remain until they expire. Nobody holds their secrets.
	CreateJoinTokens(ctx context.Context, tokens []JoinToken) error
	// JoinToken returns the token stored under hash, or ErrNotFound. On
	// a store shared by replicas (store/etcd) the record may be a moment
	// stale: a token that exists is always found, but its use by another
	// replica may not show yet. Issue checks the token again in its
	// transaction, so a stale record never lets a token be used twice.
	JoinToken(ctx context.Context, hash []byte) (*JoinToken, error)
	// Sweep removes, in one transaction, at most limit of the records
	// that expired before before: certificates whose NotAfter is earlier
	// (with their revocation entries) and join tokens whose ExpiresAt
	// is, oldest first. The issuance log keeps its entries; replay keys
	// stay. The daemon calls it with now minus the retention.
	// store/etcd deletes in transactions of at most --max-txn-ops
	// operations instead: a sweep that fails midway has removed some of
	// the records (each index entry after its record, so the next sweep
	// finds the rest).
	Sweep(ctx context.Context, before time.Time, limit int) (Swept, error)
	// Anchors returns the trust anchors (an empty set, sequence 0, when
	// none was ever stored).
	Anchors(ctx context.Context) (*AnchorSet, error)
	// UpdateAnchors applies fn to a copy of the current anchor set and
	// stores the result atomically, with Sequence one higher, when fn
	// returns nil; it returns the set stored. fn may run more than once
	// (a backend shared between processes retries on a conflict), so it
	// must only change the set it is given. fn's error is returned as is.
	UpdateAnchors(ctx context.Context, fn func(*AnchorSet) error) (*AnchorSet, error)
	// IssuerStats counts the certificates issued by issuerSKI that are
	// unexpired at now (revoked ones included) and returns the latest
	// NotAfter among them.
	IssuerStats(ctx context.Context, issuerSKI string, now time.Time) (IssuerStats, error)
	// Close releases the store; pending writes finish first.
	Close() error
	Workloads
}

// Workloads stores the workload definitions: one set, changed atomically.
type Workloads interface {
	// Workloads returns the definitions (an empty set, sequence 0, when
	// none was ever stored).
	Workloads(ctx context.Context) (*workloads.Set, error)
	// UpdateWorkloads applies fn to a copy of the current set and stores
	// the result, with Sequence one higher, when fn returns nil; it
	// returns the set stored. fn may run more than once; its error is
	// returned as is.
	UpdateWorkloads(ctx context.Context, fn func(*workloads.Set) error) (*workloads.Set, error)
}

// Identity is implemented by stores that carry the identity agentca init
// binds the state directory to (store/bolt, store/etcd), so that a daemon
// never serves another CA's store, or a new empty one, by mistake.
type Identity interface {
	// StoreID returns the store's identity, "" when it has none.
	StoreID(ctx context.Context) (string, error)
	// SetStoreID gives the store identity id; it refuses to change one
	// it already has.
	SetStoreID(ctx context.Context, id string) error
}

// LogHeadReader is implemented by stores that read the log's state and
// its saved tree head (nil when none) at one moment, so that a start
// under load never compares a state and a tree head from two moments.
type LogHeadReader interface {
	LogHead(ctx context.Context) (translog.State, *ct.SignedTreeHead, error)
}

// AnchorState is where a trust anchor is in its lifecycle.
type AnchorState string

// The states of a trust anchor, in order. Staged, active and retiring
// anchors are published to relying services; only the active one issues;
// active and retiring ones answer OCSP and publish CRLs.
const (
	AnchorStaged   AnchorState = "staged"
	AnchorActive   AnchorState = "active"
	AnchorRetiring AnchorState = "retiring"
	AnchorRetired  AnchorState = "retired"
)

// Anchor is one trust anchor: a root and the issuing CA under it. Two
// anchors share a root when one was staged with a new issuing CA only.
type Anchor struct {
	ID    string      `json:"id"`
	State AnchorState `json:"state"`
	// Root and Issuer are the DER of the root and the issuing CA.
	Root   []byte `json:"root"`
	Issuer []byte `json:"issuer"`
	// CrossSigned, when set, is the DER of the issuing CA's key and name
	// certified by the root of the anchor that was active at staging, so
	// relying services that only know that root can verify new leaves.
	CrossSigned []byte `json:"cross_signed,omitempty"`
	// RootKey and IssuerKey locate the keys: a path relative to the
	// state directory, or a KMS URI. RootKey is the shared root's key
	// for an intermediate-only anchor.
	RootKey   string `json:"root_key"`
	IssuerKey string `json:"issuer_key"`
	// IssuerSKI is the issuing CA's subject key identifier, lowercase hex
	// (Certificate.IssuerSKI of what it issued).
	IssuerSKI string `json:"issuer_ski"`
	// JWTKey locates the anchor's JWT-SVID signing key (ES256; a path
	// relative to the state directory, or a KMS URI) and JWTPublicKey is
	// its public key (PKIX DER), published in the bundle while the anchor
	// is staged, active or retiring; only the active anchor's key signs.
	// Both are empty for an anchor made before JWT-SVIDs.
	JWTKey       string `json:"jwt_key,omitempty"`
	JWTPublicKey []byte `json:"jwt_public_key,omitempty"`
	// The times of the transitions; zero until they happen.
	StagedAt    time.Time `json:"staged_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiringAt  time.Time `json:"retiring_at,omitzero"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
}

// AnchorSet is every trust anchor the CA has known, in staging order.
type AnchorSet struct {
	// Sequence increases with every stored change: the trust bundle's
	// spiffe_sequence.
	Sequence uint64   `json:"sequence"`
	Anchors  []Anchor `json:"anchors"`
}

// Active returns the active anchor, or nil.
func (s *AnchorSet) Active() *Anchor {
	for i := range s.Anchors {
		if s.Anchors[i].State == AnchorActive {
			return &s.Anchors[i]
		}
	}
	return nil
}

// Find returns the anchor with id, or nil.
func (s *AnchorSet) Find(id string) *Anchor {
	for i := range s.Anchors {
		if s.Anchors[i].ID == id {
			return &s.Anchors[i]
		}
	}
	return nil
}

// Clone returns a deep copy of s.
func (s *AnchorSet) Clone() *AnchorSet {
	out := &AnchorSet{Sequence: s.Sequence, Anchors: make([]Anchor, len(s.Anchors))}
	copy(out.Anchors, s.Anchors)
	return out
}

// IssuerStats describes what an issuing CA issued that is still valid.
type IssuerStats struct {
	// Unexpired counts the certificates not yet expired, revoked or not.
	Unexpired int `json:"unexpired"`
	// LastNotAfter is the latest NotAfter among them; zero when none.
	LastNotAfter time.Time `json:"last_not_after,omitzero"`
	// ByProvisioner splits the counts by the provisioner that vouched
	// (the CA's own server and OCSP responder certificates have theirs).
	ByProvisioner map[string]IssuerCount `json:"by_provisioner,omitempty"`
}

// IssuerCount is one provisioner's share of IssuerStats.
type IssuerCount struct {
	Unexpired    int       `json:"unexpired"`
	LastNotAfter time.Time `json:"last_not_after,omitzero"`
}

// Add counts one unexpired certificate of provisioner expiring at notAfter.
func (s *IssuerStats) Add(provisioner string, notAfter time.Time) {
	s.Unexpired++
	if notAfter.After(s.LastNotAfter) {
		s.LastNotAfter = notAfter
	}
	if s.ByProvisioner == nil {
		s.ByProvisioner = map[string]IssuerCount{}
	}
	c := s.ByProvisioner[provisioner]
	c.Unexpired++
	if notAfter.After(c.LastNotAfter) {
		c.LastNotAfter = notAfter
	}
	s.ByProvisioner[provisioner] = c
}

// Swept is what one Sweep removed.
type Swept struct {
	Certificates, JoinTokens int
	// More reports that the sweep stopped at its limit: call it again.
	More bool
}

// NormalizeSerial parses a hex serial in any case, with or without leading
// zeros or colons (as openssl prints them), and returns its canonical
// form: lowercase hex of the big-endian bytes, no leading zero byte.
func NormalizeSerial(serial string) (string, error) {
	n, ok := new(big.Int).SetString(strings.ReplaceAll(serial, ":", ""), 16)
	if !ok || n.Sign() <= 0 || n.BitLen() > 160 {
		return "", fmt.Errorf("store: bad serial %q (want up to 40 hex digits)", serial)
	}
	return hex.EncodeToString(n.Bytes()), nil
}

// parentKey is the JSON key of Certificate.Parent (omitempty: a record
// without a parent does not have it).
var parentKey = []byte(`"parent"`)

// SkipRaw reports whether a certificate record stored as the JSON raw can
// be left out of a listing with opts without decoding it: the listing
// keeps only workload SVIDs and raw has no "parent" key. A record it does
// not skip is decoded and checked by Keep.
func (opts *ListOptions) SkipRaw(raw []byte) bool {
	return (opts.Workloads || opts.Parent != "") && !bytes.Contains(raw, parentKey)
}

// Keep reports whether the decoded certificate rec belongs in a listing
// with opts.
func (opts *ListOptions) Keep(rec *Certificate) bool {
	return (opts.SPIFFEID == "" || rec.SPIFFEID == opts.SPIFFEID) && (opts.Task == "" || rec.Task == opts.Task) &&
		(opts.Parent == "" || rec.Parent == opts.Parent) && (!opts.Workloads || rec.Parent != "")
}
