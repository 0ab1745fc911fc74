package k8ssa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
)

// maxAPIResponse bounds what is read from the API server.
const maxAPIResponse = 1 << 20

// tokenReview is authentication.k8s.io/v1 TokenReview, the fields used.
type tokenReview struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		Token     string   `json:"token"`
		Audiences []string `json:"audiences,omitempty"`
	} `json:"spec"`
	Status struct {
		Authenticated bool `json:"authenticated"`
		User          struct {
			Username string              `json:"username"`
			UID      string              `json:"uid"`
			Groups   []string            `json:"groups"`
			Extra    map[string][]string `json:"extra"`
		} `json:"user"`
		Audiences []string `json:"audiences"`
		Error     string   `json:"error"`
	} `json:"status"`
}

// pod is core/v1 Pod, the fields used.
type pod struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string `json:"serviceAccountName"`
		NodeName           string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase"`
	} `json:"status"`
}

// The extra keys the service-account authenticator sets.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// check has the API server review the token for audience, then requires
// the pod it names to exist with its UID, service account (and node).
func (r *reviewer) check(ctx context.Context, token, audience string, s *sa) error {
	var req tokenReview
	req.APIVersion, req.Kind = "authentication.k8s.io/v1", "TokenReview"
	req.Spec.Token, req.Spec.Audiences = token, []string{audience}
	body, err := json.Marshal(&req)
	if err != nil {
		return err
	}
	var rev tokenReview
	if err := r.do(ctx, http.MethodPost, r.base.JoinPath("apis/authentication.k8s.io/v1/tokenreviews").String(), body, &rev); err != nil {
		return refuse("TokenReview: %v", err)
	}
	st := &rev.Status
	username := "system:serviceaccount:" + s.namespace + ":" + s.name
	switch {
	case !st.Authenticated:
		return refuse("TokenReview: not authenticated: %q", trunc(st.Error))
	case !slices.Contains(st.Audiences, audience):
		return refuse("TokenReview: audiences %q do not contain %q", st.Audiences, audience)
	case st.User.Username != username:
		return refuse("TokenReview: user %q, the token names %s", trunc(st.User.Username), username)
	case st.User.UID != "" && st.User.UID != s.uid:
		return refuse("TokenReview: service account uid %q, the token names %s", trunc(st.User.UID), s.uid)
	case !extraMatches(st.User.Extra, extraPodName, s.pod) || !extraMatches(st.User.Extra, extraPodUID, s.podUID):
		return refuse("TokenReview: pod in the review differs from the token's")
	}
	var p pod
	err = r.do(ctx, http.MethodGet, r.base.JoinPath("api/v1/namespaces", s.namespace, "pods", s.pod).String(), nil, &p)
	if err != nil {
		return refuse("pod %s/%s: %v", s.namespace, s.pod, err)
	}
	switch {
	case p.Metadata.UID != s.podUID:
		return refuse("pod %s/%s has uid %q, the token names %s", s.namespace, s.pod, trunc(p.Metadata.UID), s.podUID)
	case p.Metadata.Namespace != s.namespace || p.Metadata.Name != s.pod:
		return refuse("pod %s/%s: the API server answered for %s/%s", s.namespace, s.pod, trunc(p.Metadata.Namespace), trunc(p.Metadata.Name))
	case p.Spec.ServiceAccountName != s.name:
		return refuse("pod %s/%s runs as %q, the token names %s", s.namespace, s.pod, trunc(p.Spec.ServiceAccountName), s.name)
	case s.node != "" && p.Spec.NodeName != s.node:
		return refuse("pod %s/%s is on node %q, the token names %s", s.namespace, s.pod, trunc(p.Spec.NodeName), s.node)
	case p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed":
		return refuse("pod %s/%s has terminated (%s)", s.namespace, s.pod, p.Status.Phase)
	}
	return nil
}

// extraMatches: an extra value, when the API server gives one, must be
// exactly want.
func extraMatches(extra map[string][]string, key, want string) bool {
	v, ok := extra[key]
	return !ok || (len(v) == 1 && v[0] == want)
}

// do sends one request with the CA's bearer token and decodes a 200 or
// 201 answer.
func (r *reviewer) do(ctx context.Context, method, url string, body []byte, out any) error {
	tok, err := readToken(r.tokenFile)
	if err != nil {
		return fmt.Errorf("api_token_file: %w", err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse+1))
	if err != nil {
		return err
	}
	if len(data) > maxAPIResponse {
		return errors.New("API server answer too large")
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated:
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("API server refused the CA's credentials (%s): check api_token_file and RBAC", resp.Status)
	default:
		return fmt.Errorf("API server answered %s", resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("API server answer: %w", err)
	}
	return nil
}

// readToken reads a bearer token file (at most 64 KiB, one line).
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	switch {
	case t == "":
		return "", errors.New("empty")
	case len(t) > 64<<10 || strings.ContainsAny(t, "\r\n\t "):
		return "", errors.New("not a bearer token")
	}
	return t, nil
}

func trunc(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}
