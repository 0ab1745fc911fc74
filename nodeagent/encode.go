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
// DER (made at each call: a copy), and the PKCS#8 key (kept).
type encodedSVID struct {
	chain, key []byte
}

// encodings caches the PKCS#8 key of each credentials, so a key served
// many times is encoded once (the encoding of a P-256 key costs about as
// much as the rest of a cached FetchX509SVID on the server).
type encodings struct {
	mu sync.Mutex
	m  map[*agent.Credentials][]byte // PKCS#8 keys
}

func (e *encodings) get(cr *agent.Credentials) (encodedSVID, error) {
	chain := concatDER(append([]*x509.Certificate{cr.Leaf}, cr.Chain...))
	e.mu.Lock()
	key, ok := e.m[cr]
	e.mu.Unlock()
	if ok {
		return encodedSVID{chain: chain, key: key}, nil
	}
	key, err := x509.MarshalPKCS8PrivateKey(cr.Key)
	if err != nil {
		return encodedSVID{}, err
	}
	e.mu.Lock()
	if e.m == nil || len(e.m) >= maxEncoded {
		e.m = map[*agent.Credentials][]byte{}
	}
	e.m[cr] = key
	e.mu.Unlock()
	return encodedSVID{chain: chain, key: key}, nil
}
