package ocsp

// RevokedMarks is the number of revocation marks the responder keeps.
func (r *Responder) RevokedMarks() int {
	n := 0
	r.revoked.Range(func(any, any) bool { n++; return true })
	return n
}

// MaxUnknown is maxUnknown, for tests.
const MaxUnknown = maxUnknown
