// Package wire holds the JSON bodies of agentca's HTTP API and admin API:
// the requests and responses of every endpoint, the anchor status and the
// error body. The server (api), the client library (agent), the CLI
// (cmd/agentca) and the tests share these types, so a field is named in
// one place and the bytes on the wire cannot drift between them.
//
// It is a leaf: it imports no other package of agentca (the standard
// library, and certificate-transparency-go for the signed tree head in a
// log receipt), so a client links no server code through it (TestLeaf).
// The types carry no behaviour; docs/api.md and SPEC.md describe what each
// endpoint does with them.
package wire
