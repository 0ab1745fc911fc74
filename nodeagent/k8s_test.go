package nodeagent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	webUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
	webCID = "4f5d0c8e1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5"
)

func TestParseCgroup(t *testing.T) {
	for name, tc := range map[string]struct{ in, uid, cid string }{
		"systemd v2":  {"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-" + webCID + ".scope\n", webUID, webCID},
		"cgroupfs v1": {"12:memory:/kubepods/besteffort/pod" + webUID + "/" + webCID + "\n11:cpu:/kubepods/besteffort/pod" + webUID + "/" + webCID + "\n", webUID, webCID},
		"not a pod":   {"0::/user.slice/user-1000.slice/session-2.scope\n", "", ""},
		"two pods":    {"12:memory:/kubepods/pod" + webUID + "/" + webCID + "\n11:cpu:/kubepods/pod9f8e7d6c-5b4a-4321-8fed-cba987654321/" + webCID + "\n", "", ""},
	} {
		uid, cid := ParseCgroup(tc.in)
		if uid != tc.uid || cid != tc.cid {
			t.Errorf("%s: got %q %q, want %q %q", name, uid, cid, tc.uid, tc.cid)
		}
	}
}

// FuzzParseCgroup: whatever the file, a pod UID found is a UUID and a
// container ID 64 hex digits.
func FuzzParseCgroup(f *testing.F) {
	f.Add("0::/kubepods/pod" + webUID + "/" + webCID)
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	hex64 := regexp.MustCompile(`^[0-9a-f]{64}$`)
	f.Fuzz(func(t *testing.T, s string) {
		uid, cid := ParseCgroup(s)
		if uid != "" && !uuid.MatchString(uid) || cid != "" && !hex64.MatchString(cid) || uid == "" && cid != "" {
			t.Fatalf("ParseCgroup(%q) = %q, %q", s, uid, cid)
		}
	})
}

// TestKubeletSelectors: a kubelet serving the real /pods JSON over HTTPS
// with a bearer token, and a process whose cgroup file names a pod.
func TestKubeletSelectors(t *testing.T) {
	pods, err := os.ReadFile("testdata/pods.json")
	if err != nil {
		t.Fatal(err)
	}
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pods" || r.Header.Get("Authorization") != "Bearer kubelet-token" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(pods)
	}))
	defer kubelet.Close()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("kubelet-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := procRoot
	procRoot = filepath.Join(dir, "proc")
	defer func() { procRoot = old }()
	if err := os.MkdirAll(filepath.Join(procRoot, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	cg := "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-" + webCID + ".scope\n"
	if err := os.WriteFile(filepath.Join(procRoot, "4242", "cgroup"), []byte(cg), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := kubelet.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	k, err := NewKubelet(KubeletConfig{URL: kubelet.URL, TokenFile: tokFile, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	sel, err := k.Selectors(context.Background(), 4242)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(sel)
	want := []string{"k8s:container-name:web", "k8s:node-name:node-a", "k8s:ns:apps", "k8s:pod-label:app:web",
		"k8s:pod-label:pod-template-hash:7d9c8b6f5", "k8s:pod-name:web-7d9c8b6f5-x2k4q", "k8s:pod-uid:" + webUID, "k8s:sa:web"}
	if !slices.Equal(sel, want) {
		t.Fatalf("selectors\n%s\nwant\n%s", strings.Join(sel, "\n"), strings.Join(want, "\n"))
	}
	// A wrong token is an error, not an empty answer.
	if err := os.WriteFile(tokFile, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	k2, _ := NewKubelet(KubeletConfig{URL: kubelet.URL, TokenFile: tokFile, Roots: roots})
	if _, err := k2.Selectors(context.Background(), 4242); err == nil {
		t.Fatal("a kubelet refusing the token gave selectors")
	}
}
