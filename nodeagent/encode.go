package nodeagent

import (
	"crypto/x509"
	"sync"

	"github.com/agentca/agentca/agent"
)

// maxEncoded bounds the encoded SVIDs kept; past it they are all
// dropped and encoded again as asked.
const maxEncoded = 4096

// encodedSVID is an SVID as the Workload API sends it: the leaf and chain
// DER, and the PKCS#8 key.
type encodedSVID struct {
	chain, key []byte
}

// encodings caches encodedSVID by credentials, so an SVID served to many
// callers is encoded once (the PKCS#8 encoding of a P-256 key costs about
// as much as the rest of a cached FetchX509SVID on the server).
type encodings struct {
	mu sync.Mutex
	m  map[*agent.Credentials]encodedSVID
}

func (e *encodings) get(cr *agent.Credentials) (encodedSVID, error) {
	e.mu.Lock()
	enc, ok := e.m[cr]
	e.mu.Unlock()
	if ok {
		return enc, nil
	}
	key, err := x509.MarshalPKCS8PrivateKey(cr.Key)
	if err != nil {
		return encodedSVID{}, err
	}
	enc = encodedSVID{chain: concatDER(append([]*x509.Certificate{cr.Leaf}, cr.Chain...)), key: key}
	e.mu.Lock()
	if e.m == nil || len(e.m) >= maxEncoded {
		e.m = map[*agent.Credentials]encodedSVID{}
	}
	e.m[cr] = enc
	e.mu.Unlock()
	return enc, nil
}
