// Package strictjson decodes the JSON that provisioners take from
// configuration and from agents: exactly one object, no unknown field (not
// even one matching only case-insensitively), no key given twice, nothing
// after the object; errors name the field.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Decode decodes raw into v (a pointer to a struct). what names the input
// in errors ("token"); with what empty, field errors are bare
// (`audience: want string`) and the others say "options". Empty raw is {}.
func Decode(raw []byte, v any, what string) error {
	where, prefix := what, what+": "
	if what == "" {
		where, prefix = "options", ""
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	if raw[0] != '{' {
		return fmt.Errorf("%s: want a JSON object", where)
	}
	if err := exactKeys(raw, v, where, prefix); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s%s: want %s", prefix, te.Field, te.Type)
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return fmt.Errorf("%s%s: unknown field", prefix, f)
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s: data after the object", where)
	}
	return nil
}

// exactKeys refuses what encoding/json would let through: a key that
// matches a field only case-insensitively ("Audience"), and a key given
// twice.
func exactKeys(raw []byte, v any, where, prefix string) error {
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
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&fields); err != nil { // the first value; Decode checks what follows
		return fmt.Errorf("%s: %w", where, err)
	}
	for k := range fields {
		if !names[k] {
			return fmt.Errorf("%s%q: unknown field", prefix, k)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // {
		return fmt.Errorf("%s: %w", where, err)
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		k, _ := t.(string)
		if seen[k] {
			return fmt.Errorf("%s%s: given twice", prefix, k)
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

// Each checks every element of list, the config field named field, with
// ok, and names the first one refused: `field[i]: "value" is not what`.
func Each(field string, list []string, ok func(string) bool, what string) error {
	for i, v := range list {
		if !ok(v) {
			return fmt.Errorf("%s[%d]: %q is not %s", field, i, v, what)
		}
	}
	return nil
}
