package wire

// Error is the JSON body of every error response of the HTTP API and the
// admin API; the HTTP status travels beside it.
type Error struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}
