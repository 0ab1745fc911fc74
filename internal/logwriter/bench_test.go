package logwriter

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
)

// BenchmarkSlogAuditParallel logs an audit-like line through slog's text
// handler from all Ps, straight to /dev/null and through a Writer: the
// handler's mutex is held during the write in both cases.
func BenchmarkSlogAuditParallel(b *testing.B) {
	for _, bc := range []struct {
		name string
		wrap func(f *os.File) (io.Writer, func() error)
	}{
		{"direct", func(f *os.File) (io.Writer, func() error) { return f, func() error { return nil } }},
		{"logwriter", func(f *os.File) (io.Writer, func() error) { lw := New(f, Options{}); return lw, lw.Close }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := devNull(b)
			w, closeW := bc.wrap(f)
			log := slog.New(slog.NewTextHandler(w, nil))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					log.Info("audit", "op", "jwt-svid", "provisioner", "join", "remote", "127.0.0.1:54321",
						"outcome", "issued", "spiffe_id", "spiffe://example.org/svc/a", "jti", "0123456789abcdef")
				}
			})
			if err := closeW(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// devNull is the benchmarks' underlying writer: each Write is a real
// write(2), and nothing grows on disk however large b.N gets.
func devNull(b *testing.B) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func benchLine() []byte { return []byte(strings.Repeat("z", 99) + "\n") }

func BenchmarkWriterParallel(b *testing.B) {
	f := devNull(b)
	lw := New(f, Options{})
	p := benchLine()
	b.SetBytes(int64(len(p)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			lw.Write(p)
		}
	})
	if err := lw.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFileParallel is the baseline: each line is one write(2).
func BenchmarkFileParallel(b *testing.B) {
	f := devNull(b)
	p := benchLine()
	b.SetBytes(int64(len(p)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.Write(p)
		}
	})
}
