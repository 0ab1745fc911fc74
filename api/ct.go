package api

// The issuance log at the HTTP edge: the CT v1 endpoints (RFC 6962 §4) on
// the plain HTTP listener, GET /v1/log-key, and the "log" object of a
// SignResponse. The tree heads and receipts come from the log's signer
// (LogSigner: package logsign), the entries and proofs from the stored
// log (LogReader).

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/wire"
	ct "github.com/google/certificate-transparency-go"
)

// MaxLogEntries bounds the entries one get-entries answer holds; a client
// asking for more gets the first MaxLogEntries and asks again, as RFC 6962
// §4.6 allows.
const MaxLogEntries = 256

// LogSigner is the issuance log's tree head signer (*logsign.Signer), as
// get-sth, /v1/log-key and the sign responses use it.
type LogSigner interface {
	// Latest returns the latest signed tree head; LatestJSON its get-sth
	// body, which the caller must not modify.
	Latest() *ct.SignedTreeHead
	LatestJSON() []byte
	// PublicKeyPEM returns the log's public key, PEM ("PUBLIC KEY").
	PublicKeyPEM() []byte
	// Receipt returns the receipt of the committed entry at index with
	// leaf: a signed tree head that includes it and the inclusion proof.
	Receipt(ctx context.Context, index uint64, leaf *translog.Leaf) (*wire.LogReceipt, error)
}

// LogReader is what the CT endpoints read of the stored log (store.Log).
type LogReader interface {
	translog.NodeReader
	LogIndex(ctx context.Context, leafHash []byte) (uint64, error)
	LogEntries(ctx context.Context, start, end uint64) ([][]byte, error)
}

func nonNil(p [][]byte) [][]byte {
	if p == nil {
		return [][]byte{}
	}
	return p
}

// logReceipt is the SignResponse's log object for issued; nil when the
// server keeps no log.
func (s *Server) logReceipt(ctx context.Context, issued *ca.Issued) (*wire.LogReceipt, *Error) {
	if s.tlog == nil || issued.LogLeaf == nil {
		return nil, nil
	}
	rc, err := s.tlog.Receipt(ctx, issued.LogIndex, issued.LogLeaf)
	if err != nil {
		s.log.Error("issuance log receipt", "serial", issued.Serial, "log_index", issued.LogIndex, "err", err)
		return nil, s.refusal(err)
	}
	return rc, nil
}

// ---------------------------------------------------------------------
// Handlers.

// routeLog adds the CT v1 endpoints and /v1/log-key to mux.
func (s *Server) routeLog(mux *http.ServeMux) {
	mux.HandleFunc(ct.GetSTHPath, allow(http.MethodGet, s.getSTH))
	mux.HandleFunc(ct.GetSTHConsistencyPath, allow(http.MethodGet, s.getSTHConsistency))
	mux.HandleFunc(ct.GetProofByHashPath, allow(http.MethodGet, s.getProofByHash))
	mux.HandleFunc(ct.GetEntriesPath, allow(http.MethodGet, s.getEntries))
	mux.HandleFunc(ct.GetRootsPath, allow(http.MethodGet, s.getRoots))
	mux.HandleFunc(ct.AddChainPath, noSubmissions)
	mux.HandleFunc(ct.AddPreChainPath, noSubmissions)
	mux.HandleFunc("/v1/log-key", allow(http.MethodGet, s.logKey))
}

// noSubmissions answers add-chain and add-pre-chain: the log records only
// what this CA issues.
func noSubmissions(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "")
	writeError(w, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "this log records only the certificates this CA issues; it takes no submissions"))
}

func (s *Server) logKey(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.tlog.PublicKeyPEM())
}

func (s *Server) getSTH(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(append(s.tlog.LatestJSON(), '\n'))
}

// uintParam reads the decimal query parameter name.
func uintParam(r *http.Request, name string) (uint64, *Error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, errorf(http.StatusBadRequest, CodeBadRequest, "the %s parameter is required", name)
	}
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, CodeBadRequest, "%s=%q is not a non-negative decimal integer", name, truncate(v, 32))
	}
	return n, nil
}

func (s *Server) getSTHConsistency(w http.ResponseWriter, r *http.Request) {
	first, e := uintParam(r, "first")
	if e == nil {
		var second uint64
		if second, e = uintParam(r, "second"); e == nil {
			size := s.tlog.Latest().TreeSize
			switch {
			case first > second:
				e = errorf(http.StatusBadRequest, CodeBadRequest, "first (%d) is larger than second (%d)", first, second)
			case second > size:
				e = errorf(http.StatusBadRequest, CodeBadRequest, "second (%d) is larger than the latest tree head's size %d", second, size)
			default:
				p, err := translog.ConsistencyProof(r.Context(), s.tlogStore, first, second)
				if err != nil {
					e = s.logError(err)
					break
				}
				writeJSON(w, http.StatusOK, ct.GetSTHConsistencyResponse{Consistency: nonNil(p)})
				return
			}
		}
	}
	writeError(w, e)
}

func (s *Server) getProofByHash(w http.ResponseWriter, r *http.Request) {
	e := func() *Error {
		// A '+' sent unescaped in a query string reads as a space.
		hv := strings.ReplaceAll(r.URL.Query().Get("hash"), " ", "+")
		if hv == "" {
			return errorf(http.StatusBadRequest, CodeBadRequest, "the hash parameter is required")
		}
		hash, err := base64.StdEncoding.DecodeString(hv)
		if err != nil || len(hash) != 32 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "hash=%q is not a base64 SHA-256 leaf hash", truncate(hv, 64))
		}
		size, e := uintParam(r, "tree_size")
		if e != nil {
			return e
		}
		if latest := s.tlog.Latest().TreeSize; size == 0 || size > latest {
			return errorf(http.StatusBadRequest, CodeBadRequest, "tree_size %d is not between 1 and the latest tree head's size %d", size, latest)
		}
		index, err := s.tlogStore.LogIndex(r.Context(), hash)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, CodeNotFound, "no entry has leaf hash %s", hv)
		}
		if err != nil {
			return s.logError(err)
		}
		if index >= size {
			return errorf(http.StatusBadRequest, CodeBadRequest, "the entry with that hash (index %d) is not in the tree of size %d", index, size)
		}
		p, err := translog.InclusionProof(r.Context(), s.tlogStore, index, size)
		if err != nil {
			return s.logError(err)
		}
		writeJSON(w, http.StatusOK, ct.GetProofByHashResponse{LeafIndex: int64(index), AuditPath: nonNil(p)})
		return nil
	}()
	if e != nil {
		writeError(w, e)
	}
}

func (s *Server) getEntries(w http.ResponseWriter, r *http.Request) {
	e := func() *Error {
		start, e := uintParam(r, "start")
		if e != nil {
			return e
		}
		end, e := uintParam(r, "end")
		if e != nil {
			return e
		}
		size := s.tlog.Latest().TreeSize
		switch {
		case start > end:
			return errorf(http.StatusBadRequest, CodeBadRequest, "start (%d) is larger than end (%d)", start, end)
		case start >= size:
			return errorf(http.StatusBadRequest, CodeBadRequest, "start (%d) is not below the latest tree head's size %d", start, size)
		}
		end = min(end, start+MaxLogEntries-1, size-1)
		inputs, err := s.tlogStore.LogEntries(r.Context(), start, end+1)
		if err != nil {
			return s.logError(err)
		}
		if uint64(len(inputs)) != end+1-start {
			return s.logError(fmt.Errorf("api: the store returned %d entries for [%d, %d]", len(inputs), start, end))
		}
		resp := ct.GetEntriesResponse{Entries: make([]ct.LeafEntry, len(inputs))}
		chains := map[string][]byte{}
		for i, in := range inputs {
			extra, err := s.extraData(in, chains)
			if err != nil {
				return s.logError(fmt.Errorf("entry %d: %w", start+uint64(i), err))
			}
			resp.Entries[i] = ct.LeafEntry{LeafInput: in, ExtraData: extra}
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	}()
	if e != nil {
		writeError(w, e)
	}
}

// extraData is the get-entries extra_data of a leaf: the chain from the
// certificate's issuer up to its root (issuer first), as far as this CA
// still knows it. cache holds the encodings by issuer key ID.
func (s *Server) extraData(input []byte, cache map[string][]byte) ([]byte, error) {
	leaf, err := translog.ParseLeaf(input)
	if err != nil {
		return nil, err
	}
	var aki []byte
	if c, err := x509.ParseCertificate(leaf.Certificate()); err == nil {
		aki = c.AuthorityKeyId
	}
	if b, ok := cache[string(aki)]; ok {
		return b, nil
	}
	var chain [][]byte
	if iss, ok := s.trust.Load().issuingCert(hex.EncodeToString(aki)); len(aki) > 0 && ok {
		chain = append(chain, iss.Cert.Raw)
		if iss.Root != nil && !bytes.Equal(iss.Root.Raw, iss.Cert.Raw) {
			chain = append(chain, iss.Root.Raw)
		}
	}
	b, err := translog.ExtraData(chain)
	if err != nil {
		return nil, err
	}
	cache[string(aki)] = b
	return b, nil
}

func (s *Server) getRoots(w http.ResponseWriter, r *http.Request) {
	roots := s.trust.Load().Roots
	resp := ct.GetRootsResponse{Certificates: make([]string, len(roots))}
	for i, c := range roots {
		resp.Certificates[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	writeJSON(w, http.StatusOK, resp)
}

// logError maps a log read failure: an out-of-range request is the
// caller's (400), anything else is ours.
func (s *Server) logError(err error) *Error {
	if errors.Is(err, translog.ErrRange) {
		return errorf(http.StatusBadRequest, CodeBadRequest, "%s", strings.TrimPrefix(err.Error(), "translog: "))
	}
	return s.refusal(err)
}
