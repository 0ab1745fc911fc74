package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/agentca/agentca/wire"
)

// MaxBody is the largest request body accepted; larger ones get 413.
const MaxBody = 64 << 10

// Error codes in the "error" field of JSON error bodies. docs/api.md lists
// each with its status.
const (
	CodeBadRequest          = "bad_request"
	CodeBadCSR              = "bad_csr"
	CodeBadKey              = "bad_key"
	CodeBadTTL              = "bad_ttl"
	CodeUnknownProvisioner  = "unknown_provisioner"
	CodeUnauthorized        = "unauthorized"
	CodeForbidden           = "forbidden"
	CodeNotFound            = "not_found"
	CodeMethodNotAllowed    = "method_not_allowed"
	CodeTooLarge            = "request_too_large"
	CodeUnsupportedMedia    = "unsupported_media_type"
	CodeInternal            = "internal"
	CodeUnavailable         = "unavailable"
	CodeCertificateExpired  = "certificate_expired"
	CodeCertificateRevoked  = "certificate_revoked"
	CodeClientCertRequired  = "client_certificate_required"
	CodeUnknownCertificate  = "unknown_certificate"
	CodeIdentityNotAllowed  = "identity_not_allowed"
	CodeTaskEnded           = "task_ended"
	CodeAttestationRejected = CodeUnauthorized
)

// Error is an error answer: its HTTP status and what its JSON body says.
// In JSON it is that body, wire.Error; the status is not in it.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// MarshalJSON encodes e as its body, wire.Error.
func (e Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(wire.Error{Code: e.Code, Message: e.Message})
}

// UnmarshalJSON decodes a wire.Error body into e, leaving its status.
func (e *Error) UnmarshalJSON(b []byte) error {
	var w wire.Error
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	e.Code, e.Message = w.Code, w.Message
	return nil
}

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, e *Error) {
	countRefusal(w, e.Code)
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e)
}

// The response headers every JSON answer sets, shared: net/http only
// reads a header's values.
var (
	jsonContentType = []string{"application/json"}
	noSniff         = []string{"nosniff"}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, errorf(http.StatusInternalServerError, CodeInternal, "cannot encode the response"))
		return
	}
	b = append(b, '\n')
	h := w.Header()
	h["Content-Type"] = jsonContentType
	// A sign response with its receipt is larger than net/http's
	// 2 KB before it would chunk: with the length, it goes out in one
	// piece, without the chunk framing.
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decodeJSON reads a JSON object of at most MaxBody bytes into v, refusing
// unknown fields and trailing data. An empty body is accepted, leaving v
// as it was, only when allowEmpty is set.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) *Error {
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			got := echo(ct)
			if err == nil {
				got = strconv.Quote(truncate(mt, 64))
			}
			return errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "the body must be application/json, not %s", got)
		}
	}
	b, e := readBody(w, r)
	if e != nil {
		return e
	}
	if allowEmpty && len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, CodeBadRequest, "the body is not the expected JSON object: %s", jsonProblem(err))
	}
	// Whatever follows the object must be white space.
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return errorf(http.StatusBadRequest, CodeBadRequest, "the body has data after the JSON object")
	}
	return nil
}

// readBody reads the whole request body, at most MaxBody bytes (chunked
// ones included): a body with its length is read into one buffer of
// that size.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *Error) {
	tooLarge := func() *Error {
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "the body is larger than %d bytes", MaxBody)
	}
	if r.ContentLength > MaxBody {
		return nil, tooLarge()
	}
	var b []byte
	var err error
	if r.ContentLength >= 0 {
		// net/http's body ends at the declared length.
		b = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, b)
	} else {
		b, err = io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge()
	}
	if err != nil {
		return nil, errorf(http.StatusBadRequest, CodeBadRequest, "reading the body: %s", jsonProblem(err))
	}
	return b, nil
}

// jsonProblem shortens encoding/json's errors to something a caller can act
// on without echoing large inputs.
func jsonProblem(err error) string {
	s := err.Error()
	// An unknown field's name is caller text (perhaps a secret pasted as
	// a key): quoted only when short.
	if name, ok := strings.CutPrefix(s, `json: unknown field "`); ok {
		if u, err := strconv.Unquote(`"` + name); err == nil {
			name = u
		}
		s = "json: unknown field " + echo(strings.TrimSuffix(name, `"`))
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// allow wraps h so that other methods get a JSON 405.
func allow(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "%s is not allowed here; use %s", r.Method, method))
			return
		}
		h(w, r)
	}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, errorf(http.StatusNotFound, CodeNotFound, "no such endpoint: %s", r.URL.Path))
}

// recoverer turns a panic into a JSON 500 and a log line instead of a
// dropped connection.
func recoverer(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic in handler", "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeError(w, errorf(http.StatusInternalServerError, CodeInternal, "internal error"))
			}
		}()
		h.ServeHTTP(w, r)
	})
}
