package api

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// maxEcho is the longest caller text quoted back verbatim in an error
// message or a log line. Anything longer could be a secret sent in the
// wrong field (a join token is 54 bytes, a JWT hundreds): it is named by
// its length and a short hash only.
const maxEcho = 24

// echo quotes caller-supplied text for an error message or a log line:
// verbatim (Go-quoted) when at most maxEcho bytes, else fingerprint(s).
func echo(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	return fingerprint(s)
}

// fingerprint names caller text without revealing it: its length and the
// first 8 hex digits of its SHA-256, e.g. "(54 bytes, sha256 1a2b3c4d)".
// A caller can compare it with `printf %s VALUE | sha256sum`.
func fingerprint(s string) string {
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("(%d bytes, sha256 %s)", len(s), hex.EncodeToString(h[:4]))
}
