package test

import (
	"math/big"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// TestServeLogFlushedAtStop: the daemon's log lines go out through one
// gathering goroutine; after concurrent issuance and a SIGTERM the log
// holds one whole audit line per certificate, each once, and ends with
// the "stopped" line written on the way out.
func TestServeLogFlushedAtStop(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	const workers, perWorker = 8, 10
	toks := logE2ETokens(t, c, "spiffe://example.org/agent/logw", workers*perWorker)
	serials := make(chan string, len(toks))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := c.client(nil)
			defer hc.CloseIdleConnections()
			for i := range perWorker {
				is, err := logE2ESign(hc, c, toks[w*perWorker+i], csrPEM(t, newECKey(t), nil))
				if err != nil {
					t.Error(err)
					return
				}
				serials <- is.leaf.SerialNumber.Text(16)
			}
		}()
	}
	wg.Wait()
	close(serials)
	c.stop()
	c.mu.Lock()
	log := c.proc.log()
	c.mu.Unlock()
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, "time=") {
			t.Errorf("not a whole log line: %q", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "msg=stopped") {
		t.Errorf("the log does not end with the stop line; its last line: %q", last)
	}
	audited := map[string]int{} // serial (hex, no leading zeros) -> audit lines
	for _, l := range lines {
		m := regexp.MustCompile(`msg=audit .*outcome=issued serial=([0-9a-f]+) `).FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s, ok := new(big.Int).SetString(m[1], 16)
		if !ok {
			t.Fatalf("bad serial in %q", l)
		}
		audited[s.Text(16)]++
	}
	n := 0
	for serial := range serials {
		n++
		if found := audited[serial]; found != 1 {
			t.Errorf("serial %s: %d audit lines, want 1", serial, found)
		}
	}
	if n != workers*perWorker {
		t.Errorf("%d certificates issued, want %d", n, workers*perWorker)
	}
}

// TestAgentStartupErrorAfterLogLines: the node agent enrolls (logging as
// it goes) and then cannot open its socket (its parent is a file): the
// log lines it wrote all appear, whole, before main's one error line.
func TestAgentStartupErrorAfterLogLines(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	base := t.TempDir()
	tokFile := filepath.Join(base, "token")
	writeFile(t, tokFile, []byte(c.token("spiffe://example.org/node/logw")+"\n"))
	notDir := filepath.Join(base, "file")
	writeFile(t, notDir, []byte("x"))
	r := runCLI(t, "--log-level", "debug", "agent", "--ca", c.URL, "--root", c.rootsFile(), "--token-file", tokFile,
		"--data-dir", filepath.Join(base, "node"), "--socket", filepath.Join(notDir, "agent.sock"))
	if r.code != 1 {
		t.Fatalf("want exit 1:\n%s", r)
	}
	t.Logf("stderr:\n%s", r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("want log lines before the error line:\n%s", r)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "time=") {
			t.Errorf("not a whole log line before the error line: %q", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "agentca: ") || !strings.Contains(last, "not a directory") {
		t.Errorf("the last line is not main's error line: %q", last)
	}
}
