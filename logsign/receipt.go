package logsign

import (
	"context"
	"fmt"

	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/wire"
)

// Receipt returns the receipt of the committed entry at index with leaf:
// the tree head of the entry's own batch if this replica signed one
// (BatchSigner), else a tree head that includes it (waiting for Run if
// need be), and the inclusion proof, checked before it is returned.
func (s *Signer) Receipt(ctx context.Context, index uint64, leaf *translog.Leaf) (*wire.LogReceipt, error) {
	r := s.heads.own(index + 1)
	if r == nil {
		var err error
		if r, err = s.covering(ctx, index+1); err != nil {
			return nil, err
		}
	}
	sth := r.sth
	path, err := translog.InclusionProof(ctx, s.store, index, sth.TreeSize)
	if err != nil {
		return nil, err
	}
	if err := translog.VerifyInclusion(leaf.Hash, index, sth.TreeSize, path, sth.SHA256RootHash[:]); err != nil {
		return nil, fmt.Errorf("logsign: the stored log does not prove entry %d: %w", index, err)
	}
	return &wire.LogReceipt{Index: index, Timestamp: leaf.Timestamp(), LeafHash: leaf.Hash, TreeSize: sth.TreeSize,
		RootHash: r.resp.SHA256RootHash, InclusionProof: nonNil(path), STH: r.resp}, nil
}

// nonNil returns p, or an empty proof for nil: a proof encodes as a JSON
// array, never null.
func nonNil(p [][]byte) [][]byte {
	if p == nil {
		return [][]byte{}
	}
	return p
}
