package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Delegated tokens (RFC 8693, docs/delegation.md): a token the CA issued
// by exchanging another names, in "sub", who the chain acts for and, in
// "act", the agents acting, newest outermost. The newest actor is the
// caller: its certificate is the one on the connection (cnf) and its
// SPIFFE ID is act.sub. Options.AllowDelegation accepts such tokens.

// DefaultTaskMaxAge is how long a task's status is reused when
// Options.TaskMaxAge is zero.
const DefaultTaskMaxAge = 5 * time.Second

// maxActors bounds the act nesting read.
const maxActors = 32

// maxTasks bounds the task statuses cached.
const maxTasks = 10_000

// actClaim is one level of an act claim.
type actClaim struct {
	Sub string    `json:"sub"`
	Act *actClaim `json:"act"`
}

// parseActors returns the actors of an act claim, newest first.
func parseActors(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var top actClaim
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("the act claim is not an object: %v", err)
	}
	var ids []string
	for a := &top; a != nil; a = a.Act {
		if a.Sub == "" {
			return nil, errors.New("an act level has no sub")
		}
		if len(ids) == maxActors {
			return nil, errors.New("the act claim is nested too deep")
		}
		ids = append(ids, a.Sub)
	}
	return ids, nil
}

// taskStatus is a task's cached status.
type taskStatus struct {
	ended   bool
	fetched time.Time
	done    chan struct{} // closed when the fetch in flight is over
	err     error
}

// tasks caches task statuses fetched from the CA.
type tasks struct {
	mu sync.Mutex
	m  map[string]*taskStatus
}

// taskEnded reports whether task has ended, from a status at most
// TaskMaxAge old (an ended task stays ended), fetching it from the CA's
// task status endpoint once for all concurrent callers. An error means
// the status cannot be established: fail closed.
func (m *Middleware) taskEnded(ctx context.Context, task string) (bool, error) {
	now := m.opts.Now()
	m.tasks.mu.Lock()
	if m.tasks.m == nil {
		m.tasks.m = map[string]*taskStatus{}
	}
	st := m.tasks.m[task]
	if st != nil && st.done == nil && st.err == nil && (st.ended || now.Sub(st.fetched) < m.opts.TaskMaxAge) {
		m.tasks.mu.Unlock()
		return st.ended, nil
	}
	if st == nil || st.done == nil {
		if len(m.tasks.m) >= maxTasks {
			// Bounded: forget the settled statuses (an ended task is
			// asked about again, and is still ended).
			for k, v := range m.tasks.m {
				if v.done == nil {
					delete(m.tasks.m, k)
				}
			}
		}
		st = &taskStatus{done: make(chan struct{})}
		m.tasks.m[task] = st
		go m.fetchTask(task, st)
	}
	done := st.done
	m.tasks.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	m.tasks.mu.Lock()
	defer m.tasks.mu.Unlock()
	return st.ended, st.err
}

// fetchTask asks the CA, detached from any request.
func (m *Middleware) fetchTask(task string, st *taskStatus) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	var ts struct {
		Task  string `json:"task"`
		Ended *bool  `json:"ended"`
	}
	err := getJSON(ctx, m.httpClient(), m.opts.TaskStatusURL+"?task="+url.QueryEscape(task), &ts)
	if err == nil && (ts.Task != task || ts.Ended == nil) {
		err = fmt.Errorf("oauth: the task status answer is not for task %q", task)
	}
	m.tasks.mu.Lock()
	defer m.tasks.mu.Unlock()
	if err != nil {
		st.err = err
		m.opts.Logger.Warn("fetching a task's status failed", "task", task, "err", err)
		delete(m.tasks.m, task) // the next request tries again
	} else {
		st.ended, st.fetched = *ts.Ended, m.opts.Now()
	}
	close(st.done)
	st.done = nil
}

// checkChain accepts a token for the certificate id: a direct token
// names id as sub; a delegated one names it as the newest actor, and
// only with AllowDelegation.
func (m *Middleware) checkChain(c *Claims, id string) error {
	if len(c.Actors) == 0 {
		if c.Subject != id {
			return invalid("the token's subject is not the client certificate's SPIFFE ID", nil)
		}
		return nil
	}
	if !m.opts.AllowDelegation {
		return invalid("this service accepts no delegated token (act)", nil)
	}
	if c.Actors[0] != id {
		return invalid("the token's actor is not the client certificate's SPIFFE ID", nil)
	}
	return nil
}

// checkTask refuses a token whose task has ended.
func (m *Middleware) checkTask(ctx context.Context, c *Claims) error {
	if c.Task == "" {
		return nil
	}
	ended, err := m.taskEnded(ctx, c.Task)
	if err != nil {
		return unavailable("the token's task status cannot be established right now; retry", err)
	}
	if ended {
		return invalid("the token's task has ended", nil)
	}
	return nil
}

// httpClient is Options.HTTPClient or one trusting the Verifier's
// current anchors.
func (m *Middleware) httpClient() *http.Client {
	if m.opts.HTTPClient != nil {
		return m.opts.HTTPClient
	}
	return m.anchorsClient()
}

// anchorsClient trusts the Verifier's current anchors.
func (m *Middleware) anchorsClient() *http.Client {
	pool := x509.NewCertPool()
	for _, c := range m.opts.Verifier.Roots() {
		pool.AddCert(c)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}
