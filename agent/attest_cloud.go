package agent

// The agent side of the instance-document provisioners (aws-iid,
// azure-imds): where a VM gets the signed document it sends as /v1/sign's
// "token". The CA verifies it; these helpers only fetch it, from the
// metadata service, never through a proxy and never following a redirect.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/smallstep/pkcs7"
)

const (
	// DefaultAWSIMDSURL is the EC2 instance metadata service.
	DefaultAWSIMDSURL = "http://169.254.169.254"

	// awsIMDSTokenTTL is the lifetime asked for the IMDSv2 session
	// token, in seconds: long enough for the two GETs that follow.
	awsIMDSTokenTTL = "60"

	// AzureAttestedAPIVersion is the IMDS API version asked for attested
	// data.
	AzureAttestedAPIVersion = "2020-09-01"
)

// AWSIdentity fetches the instance identity document and its rsa2048
// PKCS#7 signature from the EC2 instance metadata service at imdsURL (""
// means DefaultAWSIMDSURL) with IMDSv2: a PUT for a session token, then
// the two GETs with it. It never falls back to IMDSv1. It returns the
// aws-iid token, {"document": b64, "rsa2048": b64}, the document exactly
// as served.
//
// From a container, IMDSv2 needs the instance's metadata hop limit to be
// at least 2, or the PUT's answer never arrives.
func AWSIdentity(ctx context.Context, imdsURL string) (string, error) {
	fail := func(err error) (string, error) { return "", fmt.Errorf("agent: aws instance identity: %w", err) }
	tokenURL, err := metadataEndpoint(imdsURL, DefaultAWSIMDSURL, "/latest/api/token", nil)
	if err != nil {
		return fail(err)
	}
	docURL, _ := metadataEndpoint(imdsURL, DefaultAWSIMDSURL, "/latest/dynamic/instance-identity/document", nil)
	sigURL, _ := metadataEndpoint(imdsURL, DefaultAWSIMDSURL, "/latest/dynamic/instance-identity/rsa2048", nil)

	session, err := awsIMDSToken(ctx, tokenURL)
	if err != nil {
		return fail(err)
	}
	doc, err := metadataGet(ctx, docURL, "X-aws-ec2-metadata-token", session)
	if err != nil {
		return fail(fmt.Errorf("document: %w", err))
	}
	if len(bytes.TrimSpace(doc)) == 0 || bytes.TrimSpace(doc)[0] != '{' {
		return fail(errors.New("document: not a JSON object"))
	}
	sig, err := metadataGet(ctx, sigURL, "X-aws-ec2-metadata-token", session)
	if err != nil {
		return fail(fmt.Errorf("rsa2048: %w", err))
	}
	// IMDS serves the signature as base64 in 64-column lines.
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil || len(der) == 0 || der[0] != 0x30 {
		return fail(errors.New("rsa2048: not a base64 PKCS#7 message"))
	}
	tok, err := json.Marshal(struct {
		Document string `json:"document"`
		RSA2048  string `json:"rsa2048"`
	}{base64.StdEncoding.EncodeToString(doc), base64.StdEncoding.EncodeToString(der)})
	if err != nil {
		return fail(err)
	}
	return string(tok), nil
}

// awsIMDSToken gets an IMDSv2 session token.
func awsIMDSToken(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", awsIMDSTokenTTL)
	resp, err := metadataClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("IMDSv2 session token (from a container, is the metadata hop limit at least 2?): %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("IMDSv2 session token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("IMDSv2 session token: metadata server answered %s", resp.Status)
	}
	tok := strings.TrimSpace(string(body))
	if tok == "" || len(tok) > 1024 || strings.ContainsAny(tok, " \t\r\n") {
		return "", errors.New("IMDSv2 session token: malformed answer")
	}
	return tok, nil
}

// AzureAttested fetches attested data for nonce (from the CA's
// /v1/challenge) from the Azure instance metadata service at imdsURL (""
// means DefaultAzureIMDSURL) and returns the azure-imds token,
// {"nonce": nonce, "signature": b64}.
func AzureAttested(ctx context.Context, imdsURL, nonce string) (string, error) {
	fail := func(err error) (string, error) { return "", fmt.Errorf("agent: azure attested data: %w", err) }
	if nonce == "" {
		return fail(errors.New("no nonce"))
	}
	if len(nonce) > 128 || strings.ContainsFunc(nonce, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return fail(fmt.Errorf("malformed nonce %q", nonce))
	}
	u, err := metadataEndpoint(imdsURL, DefaultAzureIMDSURL, "/metadata/attested/document",
		url.Values{"api-version": {AzureAttestedAPIVersion}, "nonce": {nonce}})
	if err != nil {
		return fail(err)
	}
	body, err := metadataGet(ctx, u, "Metadata", "true")
	if err != nil {
		return fail(err)
	}
	var resp struct {
		Encoding  string `json:"encoding"`
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fail(err)
	}
	if resp.Encoding != "pkcs7" {
		return fail(fmt.Errorf("encoding %q, want pkcs7", resp.Encoding))
	}
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(resp.Signature))
	if err != nil || len(der) == 0 || der[0] != 0x30 {
		return fail(errors.New("signature: not a base64 PKCS#7 message"))
	}
	// IMDS may answer from its cache with data for an earlier nonce; the
	// CA would refuse it, so say so here. Nothing is verified: the CA
	// does that.
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return fail(fmt.Errorf("signature: %w", err))
	}
	var content struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(p7.Content, &content); err != nil {
		return fail(fmt.Errorf("signed content: %w", err))
	}
	if content.Nonce != nonce {
		return fail(fmt.Errorf("IMDS answered for nonce %q, not %q (a cached answer?): ask the CA for a new challenge", content.Nonce, nonce))
	}
	tok, err := json.Marshal(struct {
		Nonce     string `json:"nonce"`
		Signature string `json:"signature"`
	}{nonce, base64.StdEncoding.EncodeToString(der)})
	if err != nil {
		return fail(err)
	}
	return string(tok), nil
}
