package agent_test

import (
	"encoding/json"
	"testing"

	"github.com/agentca/agentca/agent"
)

// TestErrorsAreTheirWireBodies: APIError and TokenError decode from the
// CA's wire bodies and encode back to them, without their HTTP status.
func TestErrorsAreTheirWireBodies(t *testing.T) {
	const apiBody = `{"error":"forbidden","message":"no"}`
	e := agent.APIError{Status: 403}
	if err := json.Unmarshal([]byte(apiBody), &e); err != nil || e != (agent.APIError{Status: 403, Code: "forbidden", Message: "no"}) {
		t.Errorf("decoded %+v (%v)", e, err)
	}
	if b, err := json.Marshal(&e); err != nil || string(b) != apiBody {
		t.Errorf("encodes as %s (%v), want %s", b, err, apiBody)
	}
	const oauthBody = `{"error":"invalid_scope","error_description":"scope x"}`
	o := agent.TokenError{Status: 400}
	if err := json.Unmarshal([]byte(oauthBody), &o); err != nil || o != (agent.TokenError{Status: 400, Code: "invalid_scope", Description: "scope x"}) {
		t.Errorf("decoded %+v (%v)", o, err)
	}
	if b, err := json.Marshal(o); err != nil || string(b) != oauthBody {
		t.Errorf("encodes as %s (%v), want %s", b, err, oauthBody)
	}
}
