package agent

// The agent side of the JWT provisioners (k8s-sa, gcp-iit, azure-msi):
// where a workload gets the token it sends as /v1/sign's "token". The CA
// verifies it; these helpers only fetch it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const (
	// DefaultK8sTokenPath is where the deploy manifests
	// (deploy/kubernetes) mount the projected service-account token: a
	// projected volume "agentca-token" at /var/run/secrets/tokens with a
	// serviceAccountToken source, path "agentca", audience "agentca" and
	// expirationSeconds 600. The kubelet rewrites the file before the
	// token expires, so it is read again at each enrollment.
	DefaultK8sTokenPath = "/var/run/secrets/tokens/agentca"
	// DefaultGCPMetadataURL is the Compute Engine metadata server.
	DefaultGCPMetadataURL = "http://metadata.google.internal"
	// DefaultAzureIMDSURL is the Azure instance metadata service.
	DefaultAzureIMDSURL = "http://169.254.169.254"

	// maxToken bounds a token file or metadata answer.
	maxToken = 64 << 10
)

// K8sToken reads the projected service-account token at path (""
// means DefaultK8sTokenPath).
func K8sToken(path string) (string, error) {
	if path == "" {
		path = DefaultK8sTokenPath
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("agent: k8s token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("agent: k8s token: %w", err)
	}
	if len(b) > maxToken {
		return "", fmt.Errorf("agent: k8s token: %s is larger than %d bytes", path, maxToken)
	}
	return checkJWT("k8s token "+path, string(b))
}

// GCPIdentityToken asks the Compute Engine metadata server at metadataURL
// ("" means DefaultGCPMetadataURL) for the instance identity token of the
// default service account, for audience (the CA's configured one), with
// format=full so that it carries the instance's project, zone and ID.
func GCPIdentityToken(ctx context.Context, metadataURL, audience string) (string, error) {
	if audience == "" {
		return "", errors.New("agent: gcp identity token: no audience")
	}
	u, err := metadataEndpoint(metadataURL, DefaultGCPMetadataURL, "/computeMetadata/v1/instance/service-accounts/default/identity",
		url.Values{"audience": {audience}, "format": {"full"}})
	if err != nil {
		return "", fmt.Errorf("agent: gcp identity token: %w", err)
	}
	body, err := metadataGet(ctx, u, "Metadata-Flavor", "Google")
	if err != nil {
		return "", fmt.Errorf("agent: gcp identity token: %w", err)
	}
	return checkJWT("gcp identity token", string(body))
}

// AzureMSIToken asks the Azure instance metadata service at imdsURL (""
// means DefaultAzureIMDSURL) for a managed-identity access token for
// resource (the CA's configured audience, e.g. api://agentca), and
// returns its access_token. It uses the system-assigned identity, or the
// only user-assigned one.
func AzureMSIToken(ctx context.Context, imdsURL, resource string) (string, error) {
	if resource == "" {
		return "", errors.New("agent: azure msi token: no resource")
	}
	u, err := metadataEndpoint(imdsURL, DefaultAzureIMDSURL, "/metadata/identity/oauth2/token",
		url.Values{"api-version": {"2018-02-01"}, "resource": {resource}})
	if err != nil {
		return "", fmt.Errorf("agent: azure msi token: %w", err)
	}
	body, err := metadataGet(ctx, u, "Metadata", "true")
	if err != nil {
		return "", fmt.Errorf("agent: azure msi token: %w", err)
	}
	var resp struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return "", fmt.Errorf("agent: azure msi token: %w", err)
	}
	if resp.AccessToken == "" {
		return "", errors.New("agent: azure msi token: no access_token in the answer")
	}
	return checkJWT("azure msi token", resp.AccessToken)
}

// metadataEndpoint joins base (http or https, host, optional path) with
// path and query.
func metadataEndpoint(base, def, path string, q url.Values) (string, error) {
	if base == "" {
		base = def
	}
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("metadata URL %q: want http(s)://host[:port]", base)
	}
	u.Path += path
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// metadataClient never uses a proxy (metadata must come from the local
// endpoint) and never follows a redirect.
func metadataClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: 10 * time.Second,
			DisableKeepAlives:     true,
		},
		Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// metadataGet GETs u with the metadata header and returns the 200 body.
func metadataGet(ctx context.Context, u, header, value string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(header, value)
	resp, err := metadataClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxToken+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxToken {
		return nil, fmt.Errorf("answer larger than %d bytes", maxToken)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error + ": " + e.Description
		}
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return nil, fmt.Errorf("metadata server answered %s: %s", resp.Status, msg)
	}
	return body, nil
}

// checkJWT trims s and checks it looks like a compact JWS, so that an
// HTML error page or an empty file fails here rather than at the CA.
func checkJWT(what, s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("agent: %s: empty", what)
	}
	if strings.Count(s, ".") != 2 || strings.ContainsAny(s, " \t\r\n\"<>{}") {
		return "", fmt.Errorf("agent: %s: not a JWT", what)
	}
	return s, nil
}
