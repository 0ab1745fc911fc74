package azureimds

import "time"

// AddChallenge makes nonce outstanding as if Challenge had issued it at
// issued, so that the fuzz target reaches the PKCS#7 checks.
func AddChallenge(p *Provisioner, nonce string, issued time.Time) {
	p.challenges.mu.Lock()
	defer p.challenges.mu.Unlock()
	p.challenges.pending[nonce] = challenge{issued: issued, expires: issued.Add(p.challenges.ttl)}
}
