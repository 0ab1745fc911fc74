package jwtverify

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentca/agentca/provisioners/internal/strictjson"
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

// Options are the dependencies of a provisioner that verifies JWTs
// against a JWKS (azure-msi, gcp-iit, k8s-sa: each package's Options is
// this type). The zero value is usable.
type Options struct {
	// SingleUse makes each token usable once (config single_use): its
	// jti (uti for Azure) is recorded at issuance. gcp-iit refuses it:
	// Google's tokens have no jti.
	SingleUse bool
	// HTTPClient fetches the JWKS (and k8s-sa's discovery document);
	// nil means a client with timeouts.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger records key loads; nil discards.
	Logger *slog.Logger
}
