package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/agentca/agentca/wire"
)

// healthCommand asks the running daemon whether it serves, over its admin
// socket; with --wait it waits for it (a script that starts `agentca serve
// &` runs `agentca health --wait 30s` before talking to it).
func healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "check that the daemon for --dir serves (exit 0), or wait until it does with --wait",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.DurationFlag{Name: "wait", Usage: "keep trying this long, e.g. 30s, before giving up", EnvVars: []string{"AGENTCA_HEALTH_WAIT"}},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("health takes no arguments")
			}
			adm := newAdminClient(c.String("dir"))
			deadline := time.Now().Add(c.Duration("wait"))
			for {
				var resp wire.Health
				err := adm.do(c.Context, http.MethodGet, "/health", nil, &resp)
				if err == nil && resp.Status == "ok" {
					fmt.Fprintln(c.App.Writer, "ok")
					return nil
				}
				if err == nil {
					err = fmt.Errorf("daemon answered status %q", resp.Status)
				}
				if !time.Now().Before(deadline) {
					if c.Duration("wait") > 0 {
						return fmt.Errorf("the daemon did not answer within %s: %w", c.Duration("wait"), err)
					}
					return err
				}
				select {
				case <-c.Context.Done():
					return c.Context.Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	}
}

// writeReadyFile writes serve's --ready-file once every listener accepts:
// the actual addresses (useful with port 0) and the process ID, as JSON,
// atomically (a reader never sees a partial file).
func writeReadyFile(path, httpsAddr, httpAddr string) error {
	b, err := json.Marshal(map[string]any{"https": httpsAddr, "http": httpAddr, "pid": os.Getpid()})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
