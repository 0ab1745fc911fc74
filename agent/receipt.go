package agent

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/agentca/agentca/translog"
	"go.step.sm/crypto/pemutil"
)

// ErrNoReceipt is returned when a certificate came without a log receipt.
var ErrNoReceipt = errors.New("agent: the CA returned no issuance-log receipt")

// VerifyReceipt checks that cr's certificate is in the CA's issuance log:
// the leaf hash is recomputed from the certificate and the receipt's
// timestamp, the tree head's signature is checked with the log's public
// key, and the inclusion proof is verified against the signed root.
func VerifyReceipt(cr *Credentials, logKey crypto.PublicKey) error {
	r := cr.LogReceipt
	if r == nil || r.STH == nil {
		return ErrNoReceipt
	}
	leaf, err := translog.NewLeaf(cr.Leaf.Raw, r.Timestamp)
	if err != nil {
		return fmt.Errorf("agent: log leaf: %w", err)
	}
	if !bytes.Equal(leaf.Hash, r.LeafHash) {
		return errors.New("agent: the receipt's leaf hash is not the certificate's")
	}
	sth, err := r.STH.ToSignedTreeHead()
	if err != nil {
		return fmt.Errorf("agent: receipt tree head: %w", err)
	}
	if err := translog.VerifySTH(logKey, sth); err != nil {
		return fmt.Errorf("agent: receipt tree head: %w", err)
	}
	if sth.TreeSize != r.TreeSize || !bytes.Equal(sth.SHA256RootHash[:], r.RootHash) {
		return errors.New("agent: the receipt's tree size or root is not the signed tree head's")
	}
	if err := translog.VerifyInclusion(leaf.Hash, r.Index, sth.TreeSize, r.InclusionProof, sth.SHA256RootHash[:]); err != nil {
		return fmt.Errorf("agent: certificate not proven in the issuance log: %w", err)
	}
	return nil
}

// LogKey fetches the issuance log's public key from the CA (/v1/log-key)
// over the already trusted TLS connection.
func (c *Client) LogKey(ctx context.Context) (crypto.PublicKey, error) {
	body, err := c.get(ctx, "/v1/log-key")
	if err != nil {
		return nil, err
	}
	return ParseLogKey(body)
}

// ParseLogKey reads a PEM public key (log.pub.pem).
func ParseLogKey(pemData []byte) (crypto.PublicKey, error) {
	k, err := pemutil.ParseKey(pemData)
	if err != nil {
		return nil, fmt.Errorf("agent: log key: %w", err)
	}
	pub, ok := k.(crypto.PublicKey)
	if !ok {
		return nil, errors.New("agent: log key is not a public key")
	}
	return pub, nil
}
