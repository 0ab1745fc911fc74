package main

// agentca backup and agentca store check (docs/operations.md).

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentca/agentca/internal/daemon"
	"github.com/urfave/cli/v2"
)

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "copy the running CA's store to a file, through the admin socket (see docs/operations.md)",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.StringFlag{Name: "out", Usage: "the file to write (replaced atomically once the copy is checked)", EnvVars: []string{"AGENTCA_BACKUP_OUT"}},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("backup takes no arguments")
			}
			out := c.String("out")
			if out == "" {
				return usagef("--out is required")
			}
			dir, err := filepath.Abs(c.String("dir"))
			if err != nil {
				return err
			}
			n, err := backup(c, dir, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "Backed up the store (%d bytes) to %s\n", n, out)
			return nil
		},
	}
}

// backup streams the copy into a temporary file beside out, checks it and
// renames it over out.
func backup(c *cli.Context, dir, out string) (int64, error) {
	a := newAdminClient(dir)
	a.http.Timeout = 0 // a large store takes as long as it takes
	req, err := http.NewRequestWithContext(c.Context, http.MethodGet, "http://agentca"+daemon.BackupPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, a.reachError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("the daemon refused the backup (%s): %s", resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("backup to %s: %w", out, err)
	}
	if done := resp.Trailer.Get(daemon.BackupDoneTrailer); done != fmt.Sprintf("ok %d", n) {
		return 0, fmt.Errorf("backup to %s: the daemon did not finish the copy (%d bytes received; its log says why); nothing was written", out, n)
	}
	if err := daemon.CheckBackup(c.Context, tmp, resp.Header.Get(daemon.BackupKindHeader), dir); err != nil {
		return 0, fmt.Errorf("backup to %s: %w; nothing was written", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return 0, err
	}
	return n, nil
}

func storeCommand() *cli.Command {
	return &cli.Command{
		Name:  "store",
		Usage: "inspect the CA's store",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "verify a stopped store: bbolt's page check, the issuance log against its tree heads, every certificate record (exit 0 only when sound)",
			Flags: []cli.Flag{dirFlag()},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return usagef("store check takes no arguments")
				}
				dir, err := filepath.Abs(c.String("dir"))
				if err != nil {
					return err
				}
				rep, err := daemon.CheckStore(c.Context, dir)
				if err != nil {
					return err
				}
				w := c.App.Writer
				fmt.Fprintf(w, "store              %s\n", rep.Store)
				if rep.Pages {
					fmt.Fprintf(w, "page check         %s\n", map[bool]string{true: "OK", false: "FAILED"}[len(rep.Problems) == 0])
				}
				fmt.Fprintf(w, "log entries        %d\n", rep.Entries)
				fmt.Fprintf(w, "certificates       %d\n", rep.Certificates)
				if len(rep.Problems) == 0 {
					fmt.Fprintln(w, "OK: the pages, the issuance log, the tree heads and every certificate record are sound")
					return nil
				}
				fmt.Fprintf(w, "PROBLEMS (%d):\n", len(rep.Problems))
				for _, p := range rep.Problems {
					fmt.Fprintf(w, "  %s\n", p)
				}
				return fmt.Errorf("store check found %d problem(s); first: %s; restore the store from a backup (docs/operations.md)", len(rep.Problems), rep.Problems[0])
			},
		}, {
			Name:  "restore",
			Usage: "put a backup made by agentca backup back as the CA's store (every daemon stopped; an etcd prefix must be empty)",
			Flags: []cli.Flag{
				dirFlag(),
				&cli.StringFlag{Name: "from", Usage: "the backup file", EnvVars: []string{"AGENTCA_RESTORE_FROM"}},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return usagef("store restore takes no arguments")
				}
				if c.String("from") == "" {
					return usagef("--from is required")
				}
				dir, err := filepath.Abs(c.String("dir"))
				if err != nil {
					return err
				}
				res, err := daemon.RestoreStore(c.Context, dir, c.String("from"))
				if err != nil {
					return err
				}
				w := c.App.Writer
				fmt.Fprintf(w, "Restored %s from %s\n", res.Store, c.String("from"))
				if res.Kept != "" {
					fmt.Fprintf(w, "The file it replaced is kept as %s\n", res.Kept)
				}
				fmt.Fprintln(w, "Start agentca serve: a backup older than what the CA published is refused unless --accept-rollback (docs/operations.md)")
				return nil
			},
		}},
	}
}
