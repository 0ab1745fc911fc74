package jwtverify

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Claims are a token's claims by their exact (case-sensitive) names, as
// raw JSON. Its accessors take a path into nested objects, e.g.
// String("kubernetes.io", "pod", "name"), and their errors name it.
type Claims map[string]json.RawMessage

// lookup follows path through nested objects.
func (c Claims) lookup(path []string) (json.RawMessage, error) {
	if len(path) == 0 {
		return nil, fmt.Errorf("claim: empty path")
	}
	cur := c
	for i, k := range path {
		raw, ok := cur[k]
		if !ok || string(raw) == "null" {
			return nil, fmt.Errorf("claim %s: missing", strings.Join(path[:i+1], "."))
		}
		if i == len(path)-1 {
			return raw, nil
		}
		var next Claims
		if err := json.Unmarshal(raw, &next); err != nil || next == nil {
			return nil, fmt.Errorf("claim %s: not an object", strings.Join(path[:i+1], "."))
		}
		cur = next
	}
	panic("unreachable")
}

// Object returns the JSON object claim at path, decoded once, so that a
// caller reading several fields under it does not decode it again for
// each.
func (c Claims) Object(path ...string) (Claims, error) {
	raw, err := c.lookup(path)
	if err != nil {
		return nil, err
	}
	var obj Claims
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("claim %s: not an object", strings.Join(path, "."))
	}
	return obj, nil
}

// Has reports whether the claim at path is present and not null.
func (c Claims) Has(path ...string) bool {
	_, err := c.lookup(path)
	return err == nil
}

// String returns the non-empty string claim at path.
func (c Claims) String(path ...string) (string, error) {
	raw, err := c.lookup(path)
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("claim %s: not a string", strings.Join(path, "."))
	}
	if s == "" {
		return "", fmt.Errorf("claim %s: empty", strings.Join(path, "."))
	}
	return s, nil
}

// Uint returns the claim at path, a JSON integer ≥ 0 (no fraction, no
// exponent), in decimal.
func (c Claims) Uint(path ...string) (string, error) {
	raw, err := c.lookup(path)
	if err != nil {
		return "", err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return "", fmt.Errorf("claim %s: not a non-negative integer", strings.Join(path, "."))
	}
	return strconv.FormatUint(n, 10), nil
}
