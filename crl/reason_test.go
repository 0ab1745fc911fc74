package crl_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentca/agentca/crl"
)

// The RFC 5280 §5.3.1 CRLReason codes agentca accepts.
var rfc5280Reasons = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"cACompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"privilegeWithdrawn":   9,
	"aACompromise":         10,
}

func TestParseReasonAndReasonName(t *testing.T) {
	for name, code := range rfc5280Reasons {
		got, err := crl.ParseReason(name)
		if err != nil || got != code {
			t.Errorf("ParseReason(%q) = %d, %v; want %d", name, got, err, code)
		}
		if n := crl.ReasonName(code); n != name {
			t.Errorf("ReasonName(%d) = %q, want %q", code, n, name)
		}
	}
	if got, err := crl.ParseReason(""); err != nil || got != 0 {
		t.Errorf(`ParseReason("") = %d, %v; want unspecified (0)`, got, err)
	}
}

func TestReasonNames(t *testing.T) {
	names := crl.ReasonNames()
	if !slices.IsSorted(names) {
		t.Errorf("ReasonNames not sorted: %v", names)
	}
	want := make([]string, 0, len(rfc5280Reasons))
	for n := range rfc5280Reasons {
		want = append(want, n)
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("ReasonNames = %v, want %v", names, want)
	}
	// Callers get their own slice.
	names[0] = "changed"
	if crl.ReasonNames()[0] == "changed" {
		t.Error("ReasonNames returns shared state")
	}
}

func TestParseReasonRefusesUnknownNames(t *testing.T) {
	for _, name := range []string{
		"certificateHold", // final revocations only
		"removeFromCRL",
		"KeyCompromise", // names are case-sensitive, as in RFC 5280
		"keycompromise",
		"key_compromise",
		" keyCompromise",
		"keyCompromise ",
		"1",
		"6",
		"reason(1)",
		"bored",
		"unspecified\x00",
	} {
		code, err := crl.ParseReason(name)
		if err == nil {
			t.Errorf("ParseReason(%q) = %d, want an error", name, code)
			continue
		}
		if !strings.Contains(err.Error(), "keyCompromise") {
			t.Errorf("ParseReason(%q) error %q does not list the accepted names", name, err)
		}
	}
}

func TestReasonNameOfUnknownCodes(t *testing.T) {
	for code, want := range map[int]string{6: "reason(6)", 7: "reason(7)", 8: "reason(8)", 11: "reason(11)", -1: "reason(-1)"} {
		if got := crl.ReasonName(code); got != want {
			t.Errorf("ReasonName(%d) = %q, want %q", code, got, want)
		}
	}
}
