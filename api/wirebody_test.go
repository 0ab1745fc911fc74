package api_test

import (
	"encoding/json"
	"testing"

	"github.com/agentca/agentca/api"
)

// TestErrorsAreTheirWireBodies: api.Error and api.OAuthError encode as the
// wire bodies, byte for byte, without their HTTP status, and decode from
// them, so code that writes or reads them directly keeps the contract.
func TestErrorsAreTheirWireBodies(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{api.Error{Status: 400, Code: "bad_request", Message: "a <b> & c"}, `{"error":"bad_request","message":"a \u003cb\u003e \u0026 c"}`},
		{&api.Error{Status: 503, Code: "unavailable", Message: ""}, `{"error":"unavailable","message":""}`},
		{api.OAuthError{Status: 400, Code: "invalid_scope", Description: "scope x"}, `{"error":"invalid_scope","error_description":"scope x"}`},
		{&api.OAuthError{Status: 503, Code: "temporarily_unavailable"}, `{"error":"temporarily_unavailable"}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%+v encodes as %s (%v), want %s", c.v, b, err, c.want)
		}
	}
	e := api.Error{Status: 418}
	if err := json.Unmarshal([]byte(`{"error":"x","message":"y"}`), &e); err != nil || e != (api.Error{Status: 418, Code: "x", Message: "y"}) {
		t.Errorf("decoded %+v (%v)", e, err)
	}
	o := api.OAuthError{Status: 401}
	if err := json.Unmarshal([]byte(`{"error":"invalid_client","error_description":"d"}`), &o); err != nil || o != (api.OAuthError{Status: 401, Code: "invalid_client", Description: "d"}) {
		t.Errorf("decoded %+v (%v)", o, err)
	}
}
