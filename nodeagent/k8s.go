package nodeagent

// Kubernetes selectors: the caller's pod, found through its cgroup (the
// pod UID and container ID the kubelet's container runtime put in the
// path) and the kubelet's /pods list, read over HTTPS with a bearer token.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// KubeletConfig locates the kubelet.
type KubeletConfig struct {
	// URL of the kubelet's HTTPS port, e.g. https://127.0.0.1:10250.
	URL string
	// TokenFile holds the bearer token (re-read at each request).
	TokenFile string
	// Roots verify the kubelet's certificate; nil means the system's.
	Roots *x509.CertPool
}

// Kubelet answers which pod a process belongs to.
type Kubelet struct {
	cfg KubeletConfig
	hc  *http.Client

	mu      sync.Mutex
	pods    []pod
	fetched time.Time
}

// NewKubelet returns a Kubelet client.
func NewKubelet(cfg KubeletConfig) (*Kubelet, error) {
	if !strings.HasPrefix(cfg.URL, "https://") || cfg.TokenFile == "" {
		return nil, errors.New("nodeagent: the kubelet needs an https:// URL and a token file")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS12}
	return &Kubelet{cfg: cfg, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}, nil
}

// pod is the part of a kubelet /pods item the selectors need.
type pod struct {
	Metadata struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		UID       string            `json:"uid"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string `json:"serviceAccountName"`
		NodeName           string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		ContainerStatuses     []containerStatus `json:"containerStatuses"`
		InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
	} `json:"status"`
}

type containerStatus struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"` // "containerd://<hex>"
}

// podCache is how long a /pods answer is reused.
const podCache = time.Second

// maxPods bounds the /pods answer read.
const maxPods = 64 << 20

func (k *Kubelet) list(ctx context.Context, fresh bool) ([]pod, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !fresh && time.Since(k.fetched) < podCache {
		return k.pods, nil
	}
	tok, err := os.ReadFile(k.cfg.TokenFile)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(k.cfg.URL, "/")+"/pods", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := k.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nodeagent: kubelet: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("nodeagent: kubelet /pods answered %d", resp.StatusCode)
	}
	var list struct {
		Items []pod `json:"items"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPods)).Decode(&list); err != nil {
		return nil, fmt.Errorf("nodeagent: kubelet /pods: %w", err)
	}
	k.pods, k.fetched = list.Items, time.Now()
	return k.pods, nil
}

var (
	podUIDRe      = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)
	containerIDRe = regexp.MustCompile(`([0-9a-f]{64})(?:\.scope)?$`)
)

// ParseCgroup returns the pod UID and container ID named in a
// /proc/PID/cgroup file (cgroupfs or systemd drivers, v1 or v2), or empty
// strings when the process is not in a pod.
func ParseCgroup(data string) (podUID, containerID string) {
	for _, line := range strings.Split(data, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		path := parts[2]
		m := podUIDRe.FindStringSubmatch(path)
		if m == nil {
			continue
		}
		uid := strings.ReplaceAll(m[1], "_", "-")
		cid := ""
		if c := containerIDRe.FindStringSubmatch(path); c != nil {
			cid = c[1]
		}
		if podUID != "" && (uid != podUID || cid != containerID) {
			return "", "" // two pods: trust neither
		}
		podUID, containerID = uid, cid
	}
	return podUID, containerID
}

// Selectors returns the k8s selectors of the process pid, none when it is
// not in a pod of this kubelet.
func (k *Kubelet) Selectors(ctx context.Context, pid int32) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/cgroup", procRoot, pid))
	if err != nil {
		return nil, err
	}
	uid, cid := ParseCgroup(string(b))
	if uid == "" {
		return nil, nil
	}
	pods, err := k.list(ctx, false)
	if err != nil {
		return nil, err
	}
	p := findPod(pods, uid)
	if p == nil { // a pod started since the last listing
		if pods, err = k.list(ctx, true); err != nil {
			return nil, err
		}
		if p = findPod(pods, uid); p == nil {
			return nil, nil
		}
	}
	return podSelectors(p, cid), nil
}

func findPod(pods []pod, uid string) *pod {
	for i := range pods {
		if pods[i].Metadata.UID == uid {
			return &pods[i]
		}
	}
	return nil
}

func podSelectors(p *pod, containerID string) []string {
	var sel []string
	add := func(typ, v string) {
		if v != "" {
			sel = append(sel, typ+":"+v)
		}
	}
	add("k8s:ns", p.Metadata.Namespace)
	add("k8s:sa", p.Spec.ServiceAccountName)
	add("k8s:pod-name", p.Metadata.Name)
	add("k8s:pod-uid", p.Metadata.UID)
	add("k8s:node-name", p.Spec.NodeName)
	for k, v := range p.Metadata.Labels {
		add("k8s:pod-label:"+k, v)
	}
	if containerID != "" {
		for _, c := range append(p.Status.ContainerStatuses, p.Status.InitContainerStatuses...) {
			if _, id, ok := strings.Cut(c.ContainerID, "://"); ok && id == containerID {
				add("k8s:container-name", c.Name)
			}
		}
	}
	return sel
}
