package logwriter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingWriter counts the Write calls that reach w.
type countingWriter struct {
	w     io.Writer
	calls atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.calls.Add(1)
	return c.w.Write(p)
}

const (
	goroutines = 16
	perG       = 2000
)

// line is writer g's i-th line: unique, fixed width, ending in a newline.
func line(g, i int) string {
	return fmt.Sprintf("level=INFO msg=audit g=%02d i=%05d pad=%s\n", g, i, strings.Repeat("x", 40))
}

// hammer writes perG lines from each of goroutines goroutines at once.
func hammer(t *testing.T, w io.Writer) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range perG {
				if _, err := io.WriteString(w, line(g, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
}

// checkLines asserts that out holds every line of hammer exactly once,
// whole, each writer's lines in the order it wrote them.
func checkLines(t *testing.T, out []byte) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != goroutines*perG {
		t.Fatalf("got %d lines, want %d", len(lines), goroutines*perG)
	}
	next := make([]int, goroutines)
	for n, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "level=INFO msg=audit g=%d i=%d", &g, &i); err != nil || g < 0 || g >= goroutines {
			t.Fatalf("line %d is not a whole line: %q", n, l)
		}
		if l+"\n" != line(g, i) {
			t.Fatalf("line %d is torn: %q", n, l)
		}
		if i != next[g] {
			t.Fatalf("line %d: writer %d's line %d, want its line %d (lost, repeated or reordered)", n, g, i, next[g])
		}
		next[g]++
	}
}

func TestConcurrentFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cw := &countingWriter{w: f}
	lw := New(cw, Options{})
	hammer(t, lw)
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	checkLines(t, out)
	if calls := cw.calls.Load(); calls >= goroutines*perG {
		t.Fatalf("%d writes for %d lines: nothing was gathered", calls, goroutines*perG)
	} else {
		t.Logf("%d lines in %d writes", goroutines*perG, calls)
	}
}

func TestConcurrentPipe(t *testing.T) {
	pr, pw := io.Pipe()
	read := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(pr)
		read <- b
	}()
	cw := &countingWriter{w: pw}
	lw := New(cw, Options{})
	hammer(t, lw)
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	checkLines(t, <-read)
	if calls := cw.calls.Load(); calls >= goroutines*perG {
		t.Fatalf("%d writes for %d lines: nothing was gathered", calls, goroutines*perG)
	}
}

func TestFlush(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lw := New(f, Options{})
	defer lw.Close()
	var want strings.Builder
	for i := range 100 {
		want.WriteString(line(0, i))
		if _, err := io.WriteString(lw, line(0, i)); err != nil {
			t.Fatal(err)
		}
		if i%10 != 9 {
			continue
		}
		if err := lw.Flush(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want.String() {
			t.Fatalf("after Flush the file has %d bytes, want %d", len(got), want.Len())
		}
	}
}

// gateWriter blocks each Write until release is closed.
type gateWriter struct {
	entered chan struct{} // gets a token when a Write starts
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (g *gateWriter) Write(p []byte) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func TestBackpressure(t *testing.T) {
	gw := &gateWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	const max = 1000
	l := strings.Repeat("y", 99) + "\n"
	lw := New(gw, Options{MaxPending: max})
	io.WriteString(lw, l) // taken by the flusher, which blocks in gw.Write
	<-gw.entered
	for range max / len(l) { // fills pending exactly to the bound
		if _, err := io.WriteString(lw, l); err != nil {
			t.Fatal(err)
		}
	}
	returned := make(chan struct{})
	go func() {
		io.WriteString(lw, l)
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("Write past the bound returned while the underlying writer was blocked")
	case <-time.After(200 * time.Millisecond):
	}
	lw.mu.Lock()
	pending := len(lw.pending)
	lw.mu.Unlock()
	if pending > max {
		t.Fatalf("%d bytes pending, bound %d", pending, max)
	}
	close(gw.release)
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Write still blocked after the underlying writer was released")
	}
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := gw.buf.String(), strings.Repeat(l, max/len(l)+2); got != want {
		t.Fatalf("wrote %d bytes, want %d", len(got), len(want))
	}
}

var errDisk = errors.New("disk full")

// failOnceWriter fails its first Write and keeps the rest.
type failOnceWriter struct {
	failed bool
	buf    bytes.Buffer
}

func (f *failOnceWriter) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, errDisk
	}
	return f.buf.Write(p)
}

func TestErrorReturnedByClose(t *testing.T) {
	fw := &failOnceWriter{}
	lw := New(fw, Options{})
	io.WriteString(lw, "lost\n")
	if err := lw.Flush(); !errors.Is(err, errDisk) {
		t.Fatalf("Flush: %v, want %v", err, errDisk)
	}
	io.WriteString(lw, "kept\n")
	if err := lw.Close(); !errors.Is(err, errDisk) {
		t.Fatalf("Close: %v, want %v", err, errDisk)
	}
	if got := fw.buf.String(); got != "kept\n" {
		t.Fatalf("after the error the writer got %q, want the later line", got)
	}
}

func TestWriteAfterClose(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lw := New(f, Options{})
	io.WriteString(lw, "before\n")
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := io.WriteString(lw, "after\n"); n != 6 || err != nil {
		t.Fatalf("Write after Close: %d, %v", n, err)
	}
	// Synchronous: in the file as soon as Write returns, no Flush needed.
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "before\nafter\n" {
		t.Fatalf("file holds %q", got)
	}
	if err := lw.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
