package wire

// ExchangeResponse is a successful RFC 8693 token exchange at POST
// /v1/token (§2.2.1; docs/delegation.md). The request is a form.
type ExchangeResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
}

// TaskStatus is the answer of GET /v1/task-status?task=ID: whether
// `agentca task end` ended the task.
type TaskStatus struct {
	Task  string `json:"task"`
	Ended bool   `json:"ended"`
}
