package wire

// Health is the body of GET /health and GET /ready: {"status":"ok"}.
type Health struct {
	Status string `json:"status"`
}
