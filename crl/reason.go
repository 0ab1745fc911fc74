package crl

import (
	"fmt"
	"sort"
)

// RFC 5280 §5.3.1 CRLReason codes that agentca accepts. certificateHold
// and removeFromCRL are absent: a revocation here is final.
var reasons = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"cACompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"privilegeWithdrawn":   9,
	"aACompromise":         10,
}

// ParseReason maps an RFC 5280 reason name (as in "keyCompromise") to its
// code; the empty name is unspecified (0).
func ParseReason(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	if c, ok := reasons[name]; ok {
		return c, nil
	}
	return 0, fmt.Errorf("crl: unknown revocation reason %q (want one of %v)", name, ReasonNames())
}

// ReasonName returns the RFC 5280 name of a reason code.
func ReasonName(code int) string {
	for n, c := range reasons {
		if c == code {
			return n
		}
	}
	return fmt.Sprintf("reason(%d)", code)
}

// ReasonNames lists the accepted names, sorted.
func ReasonNames() []string {
	out := make([]string, 0, len(reasons))
	for n := range reasons {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
