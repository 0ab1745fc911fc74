package test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeSkip marks a README block TestREADME does not run: the line
// before its fence starts with it and says why.
const readmeSkip = "<!-- not run by TestREADME"

// readmeBlocks returns the ```sh and ```bash blocks of a Markdown file, in
// order, except those marked with readmeSkip.
func readmeBlocks(t *testing.T, md []byte) []string {
	t.Helper()
	var blocks []string
	var cur *strings.Builder
	prev := ""
	sc := bufio.NewScanner(bytes.NewReader(md))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		case (line == "```sh" || line == "```bash") && !strings.HasPrefix(prev, readmeSkip):
			cur = &strings.Builder{}
		}
		prev = line
	}
	if cur != nil {
		t.Fatal("README.md: a shell block is not closed")
	}
	return blocks
}

// TestREADME runs README.md's shell blocks as a new user would: in a fresh
// copy of the tree (the files git tracks, plus new ones not ignored), all
// blocks pasted whole into one bash, in order, stopping at the first
// failing command. The binary is the one `make build` in the block builds
// from that copy. The only change: the fixed ports 8443 and 8080 become
// free ones (in the text, and for init's defaults through AGENTCA_HTTPS and
// AGENTCA_HTTP), since tests run side by side. Whatever the
// blocks leave running (serve &) is killed with the process group.
func TestREADME(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "make", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README needs %s: %v", tool, err)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(string(md), "```", 3)
	if len(first) < 3 || !strings.Contains(first[1], "make run") || !strings.Contains(first[1], "make test") {
		t.Fatal("README.md must start with a block of the two commands make run and make test")
	}
	blocks := readmeBlocks(t, md)
	if len(blocks) == 0 {
		t.Fatal("README.md has no shell block to run")
	}
	script := strings.Join(blocks, "")
	httpsAddr, httpAddr := freeAddr(t), freeAddr(t)
	for port, addr := range map[string]string{"127.0.0.1:8443": httpsAddr, "127.0.0.1:8080": httpAddr} {
		if !strings.Contains(script, port) {
			t.Fatalf("the README's blocks no longer name %s; update this test", port)
		}
		script = strings.ReplaceAll(script, port, addr)
	}
	work := filepath.Join(t.TempDir(), "agentca")
	copyTree(t, root, work)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := os.Create(filepath.Join(t.TempDir(), "readme.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = work
	// init's defaults are those two ports: its variables move them too.
	cmd.Env = childEnv("AGENTCA_HTTPS="+httpsAddr, "AGENTCA_HTTP="+httpAddr)
	// Output to a file, not a pipe: a daemon the script leaves behind must
	// not keep Wait waiting.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	runErr := cmd.Wait()
	log, _ := os.ReadFile(out.Name())
	if runErr != nil {
		t.Fatalf("the README's blocks failed: %v\nscript:\n%s\noutput:\n%s", runErr, script, log)
	}
	if !strings.Contains(string(log), "./creds/cert.pem: OK") {
		t.Fatalf("openssl did not verify the enrolled certificate:\n%s", log)
	}
	// The daemon the README started and stopped is gone within its drain.
	eventually(t, 30*time.Second, 100*time.Millisecond, "the README's daemon to exit", func() bool {
		return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
	})
	// What the README creates is ignored by git: nothing for `git add -A`.
	if _, err := os.Stat(filepath.Join(root, ".git")); err == nil {
		for _, p := range []string{"agentca-demo/roots.pem", "creds/key.pem", "agent-creds/key.pem", "bin/agentca"} {
			c := exec.Command("git", "check-ignore", "--no-index", "-q", p)
			c.Dir = root
			if err := c.Run(); err != nil {
				t.Errorf("%s is not ignored by .gitignore", p)
			}
		}
	}
}

// copyTree copies the repository at root into dst: the files git lists
// (tracked, and new ones not ignored), or, without git, every file outside
// dot-directories, bin/ and state directories.
func copyTree(t *testing.T, root, dst string) {
	t.Helper()
	var files []string
	c := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	c.Dir = root
	if b, err := c.Output(); err == nil {
		for f := range strings.SplitSeq(strings.TrimRight(string(b), "\x00"), "\x00") {
			files = append(files, f)
		}
	} else {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() && rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "bin" || rel == "agentca-data" || rel == "agentca-demo") {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() {
				files = append(files, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		src := filepath.Join(root, f)
		info, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree, not yet in git
		}
		if err != nil {
			t.Fatal(err)
		}
		if !info.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}
