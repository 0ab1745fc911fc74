package jwtverify

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/agentca/agentca/provisioners/internal/strictjson"
	"net/url"
	"strings"
)

// DecodeStrict decodes a provisioner's type-specific options into v: one
// JSON object, no unknown fields, nothing after it. Empty raw is {}.
// Errors name the field: `audience: want string`.
func DecodeStrict(raw json.RawMessage, v any) error { return strictjson.Decode(raw, v, "") }

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
