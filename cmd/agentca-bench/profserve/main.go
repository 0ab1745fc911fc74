// Command profserve is `agentca serve --dir D` plus a net/http/pprof
// listener, for profiling the daemon under load: agentca-bench --pprof DIR
// builds and runs it instead of `agentca serve` and fetches one CPU profile
// per phase. It calls the same daemon.Serve with the same logger as the
// agentca binary (text, info, or what agentca.json's "logging" says).
//
//	AGENTCA_BENCH_PPROF=127.0.0.1:6060 profserve serve --dir D
//
// The pprof listener is bound to the address given, which must be a
// loopback address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/daemon"
	"github.com/agentca/agentca/internal/logwriter"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fmt.Fprintln(os.Stderr, "usage: profserve serve --dir D   (AGENTCA_BENCH_PPROF=127.0.0.1:PORT)")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fs.String("dir", "agentca-data", "the CA's state directory")
	_ = fs.Parse(os.Args[2:])
	if err := run(*dir, os.Getenv("AGENTCA_BENCH_PPROF")); err != nil {
		fmt.Fprintf(os.Stderr, "profserve: %v\n", err)
		os.Exit(1)
	}
}

func run(dir, pprofAddr string) error {
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return err
	}
	// As agentca serve: lines gathered into few writes, flushed on return.
	lw := logwriter.New(os.Stderr, logwriter.Options{})
	defer lw.Close()
	log, err := logger(cfg.Logging, lw)
	if err != nil {
		return err
	}
	if pprofAddr != "" {
		host, _, err := net.SplitHostPort(pprofAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("AGENTCA_BENCH_PPROF=%q: want a loopback host:port", pprofAddr)
		}
		ln, err := net.Listen("tcp", pprofAddr)
		if err != nil {
			return fmt.Errorf("pprof listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go func() {
			if err := http.Serve(ln, mux); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("pprof listener", "err", err)
			}
		}()
		log.Info("pprof listening", "addr", ln.Addr().String())
	}
	return daemon.Serve(context.Background(), daemon.ServeOptions{Dir: dir, Logger: log})
}

// logger mirrors the agentca binary's serve logger.
func logger(lc config.LogConfig, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	switch lc.Level {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("logging.level %q", lc.Level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
