package nodeagent

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"google.golang.org/protobuf/types/known/structpb"
)

// maxValidations bounds the validations remembered; past it they are all
// forgotten.
const maxValidations = 4096

// validations remembers ValidateJWTSVID's successes, so a token a
// workload presents again (a client reuses its JWT-SVID until half its
// lifetime) is not verified again: the answer depends only on the
// token's bytes, the audience, the keys and the time. An entry holds for
// the bundle it was checked against (a new set of keys, a retired one
// gone, forgets it) and until the token's exp, which is checked at each
// use. Failures are not remembered.
type validations struct {
	mu sync.Mutex
	m  map[[32]byte]validation
}

type validation struct {
	bundle *jwtbundle.Bundle
	id     string
	claims *structpb.Struct // read only once stored
	exp    time.Time
}

// validationKey is unambiguous: the audience is length-prefixed, so no
// other (token, audience) pair has the same input.
func validationKey(token, audience string) [32]byte {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(audience))))
	h.Write([]byte(audience))
	h.Write([]byte(token))
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

func (v *validations) get(k [32]byte, b *jwtbundle.Bundle, now time.Time) (validation, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.m[k]
	if !ok || e.bundle != b || !now.Before(e.exp) {
		return validation{}, false
	}
	return e, true
}

func (v *validations) put(k [32]byte, e validation) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= maxValidations {
		v.m = map[[32]byte]validation{}
	}
	v.m[k] = e
}
