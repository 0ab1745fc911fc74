// Package logsign signs and publishes the tree heads of the CA's RFC 6962
// issuance log, and makes the receipts that prove a certificate is in it.
// It has no HTTP: package api serves the CT v1 endpoints and the receipts
// of its sign responses from a Signer.
//
// How a certificate's receipt comes to be:
//
//  1. The store commits the certificate's record and its log entry in one
//     transaction (store.Issuance; the log's state and tree nodes are in
//     the store, package translog).
//  2. One signed tree head covers each committed batch. On store/etcd the
//     store signs it in the batch's own transaction with the BatchSigner
//     it was opened with (etcd.Options.TreeHeads), and hands it back to
//     the BatchSigner before any of the batch's writers is answered. On
//     other stores (store/bolt), and on etcd for a batch whose signature
//     failed, the store cues the Signer after the commit
//     (Options.Appended) and Run signs one tree head for every batch
//     committed since the previous one.
//  3. The sign handler asks Signer.Receipt for the entry's receipt: the
//     tree head of the entry's own batch when this replica signed one,
//     else the first tree head that covers the entry (waiting for Run),
//     with its inclusion proof, checked before it is returned
//     (wire.LogReceipt).
//
// The published tree head (Latest, get-sth) never goes back; on a store
// shared by replicas every replica publishes the one stored for a size,
// and takes the others' through Offer.
package logsign
