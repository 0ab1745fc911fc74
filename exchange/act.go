package exchange

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Actor is one level of an RFC 8693 "act" claim: the party acting, and
// in Act the one that acted before it. agentca's actors are agents,
// named by their SPIFFE IDs.
type Actor struct {
	Sub string `json:"sub"`
	Act *Actor `json:"act,omitempty"`
}

// MaxActDepth bounds the nesting ParseAct reads, whatever the configured
// chain limit.
const MaxActDepth = 32

// Nest builds the act claim of ids, newest first: Nest(["B", "A"]) is
// {"sub": "B", "act": {"sub": "A"}}. Nil for no actors.
func Nest(ids []string) *Actor {
	var a *Actor
	for i := len(ids) - 1; i >= 0; i-- {
		a = &Actor{Sub: ids[i], Act: a}
	}
	return a
}

// ParseAct reads an act claim as agentca writes it: nested objects with
// exactly "sub" (a SPIFFE ID) and optionally "act", at most MaxActDepth
// deep. It returns the actors newest first (the outermost first). Any
// other member, a duplicate, a sub that is not a SPIFFE ID, or a
// non-object is an error.
func ParseAct(raw []byte) ([]string, error) {
	var ids []string
	for len(ids) < MaxActDepth {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var level struct {
			Sub *string         `json:"sub"`
			Act json.RawMessage `json:"act"`
		}
		if err := dec.Decode(&level); err != nil {
			return nil, fmt.Errorf("act: level %d: %v", len(ids)+1, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("act: level %d: trailing data", len(ids)+1)
		}
		if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
			return nil, fmt.Errorf("act: level %d: not an object", len(ids)+1)
		}
		if dupKeys(raw) {
			return nil, fmt.Errorf("act: level %d: a member appears twice", len(ids)+1)
		}
		if level.Sub == nil {
			return nil, fmt.Errorf("act: level %d: no sub", len(ids)+1)
		}
		if _, err := spiffeid.FromString(*level.Sub); err != nil {
			return nil, fmt.Errorf("act: level %d: sub is not a SPIFFE ID", len(ids)+1)
		}
		ids = append(ids, *level.Sub)
		if t := bytes.TrimSpace(level.Act); len(t) == 0 {
			return ids, nil
		} else if string(t) == "null" {
			return nil, fmt.Errorf("act: level %d: act is null", len(ids))
		}
		raw = level.Act
	}
	return nil, errors.New("act: nested deeper than " + fmt.Sprint(MaxActDepth))
}

// dupKeys reports whether the top-level object in raw names a member
// twice (encoding/json would keep the last one silently).
func dupKeys(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		k, _ := t.(string)
		if seen[k] {
			return true
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

// Chain renders actors (newest first) as "B <- A" for logs.
func Chain(actors []string) string { return strings.Join(actors, " <- ") }
