package wire

// WorkloadSignRequest is the body of POST /v1/workload/sign. The
// definitions (GET /v1/workload/definitions, /admin/v1/workloads) are
// workloads.Set and workloads.Definition.
type WorkloadSignRequest struct {
	SPIFFEID  string   `json:"spiffe_id"`
	Selectors []string `json:"selectors"`
	CSR       string   `json:"csr"`
}

// WorkloadDeleteRequest is the body of POST /admin/v1/workloads/delete.
type WorkloadDeleteRequest struct {
	ID string `json:"id"`
}
