package jwtverify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"strings"
)

// DecodeStrict decodes a provisioner's type-specific options into v: one
// JSON object, no unknown fields, nothing after it. Empty raw is {}.
// Errors name the field: `audience: want string`.
func DecodeStrict(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	if t := bytes.TrimSpace(raw); t[0] != '{' {
		return errors.New("options: want a JSON object")
	}
	if err := exactKeys(raw, v); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s: want %s", te.Field, te.Type)
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return fmt.Errorf("%s: unknown field", f)
		}
		return fmt.Errorf("options: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("options: data after the object")
	}
	return nil
}

// exactKeys refuses what encoding/json would let through: a key that
// matches a field only case-insensitively ("Audience"), and a key given
// twice.
func exactKeys(raw json.RawMessage, v any) error {
	names := map[string]bool{}
	if t := reflect.TypeOf(v); t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		for f := range t.Elem().Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			names[name] = true
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	for k := range fields {
		if !names[k] {
			return fmt.Errorf("%q: unknown field", k)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // {
		return fmt.Errorf("options: %w", err)
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("options: %w", err)
		}
		k, _ := t.(string)
		if seen[k] {
			return fmt.Errorf("%s: given twice", k)
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("options: %w", err)
		}
	}
	return nil
}

// CheckHTTPSURL accepts an absolute https URL with a host and no user
// information or fragment.
func CheckHTTPSURL(s string) error {
	if s == "" {
		return errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	switch {
	case u.Scheme != "https":
		return errors.New("must be an https URL")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("must name a host")
	case u.User != nil:
		return errors.New("must not carry user information")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return errors.New("must not have a fragment")
	}
	return nil
}
