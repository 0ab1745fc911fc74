package ocsp

import (
	"errors"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// errSeveral refuses a request naming more than one certificate.
var errSeveral = errors.New("ocsp: the request names more than one certificate; send one request per certificate")

// requestCount returns how many certificates (Request entries in
// tbsRequest.requestList, RFC 6960 §4.1.1) an OCSP request names.
// golang.org/x/crypto/ocsp parses only the first, and answers one
// certificate per response; a request naming several is refused with
// malformedRequest rather than answered for the first only, which a
// client would read as "no status" for the others. It reads no more than
// the structure: x/crypto/ocsp parses and checks the rest.
func requestCount(der []byte) (int, error) {
	input := cryptobyte.String(der)
	var req, tbs, list cryptobyte.String
	if !input.ReadASN1(&req, cbasn1.SEQUENCE) || !req.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return 0, errors.New("ocsp: not an OCSPRequest")
	}
	// version [0] EXPLICIT and requestorName [1] EXPLICIT are optional.
	if !tbs.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!tbs.SkipOptionalASN1(cbasn1.Tag(1).Constructed().ContextSpecific()) ||
		!tbs.ReadASN1(&list, cbasn1.SEQUENCE) {
		return 0, errors.New("ocsp: no requestList")
	}
	n := 0
	for !list.Empty() {
		if !list.SkipASN1(cbasn1.SEQUENCE) {
			return 0, errors.New("ocsp: malformed requestList")
		}
		n++
	}
	return n, nil
}
