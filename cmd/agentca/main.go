// Command agentca is the CA daemon, its admin tool and the agent's client,
// in one binary. See README.md and docs/cli.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdout, os.Stderr))
}

// usageError marks a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// run executes one command line and returns the exit status: 0 success,
// 1 failure (one line on stderr), 2 usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	notFound := ""
	app := newApp(stdout, stderr, &notFound)
	args, path := reorderArgs(app, args)
	err := app.RunContext(ctx, args)
	if notFound != "" {
		fmt.Fprintf(stderr, "agentca: unknown command %q (see agentca --help)\n", notFound)
		return 2
	}
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	msg := explain(oneLine(err.Error()), err, path)
	var ue *usageError
	if errors.As(err, &ue) || strings.HasPrefix(msg, "Required flag") || strings.HasPrefix(msg, "flag provided but not defined") {
		fmt.Fprintf(stderr, "agentca: %s (see --help)\n", msg)
		return 2
	}
	fmt.Fprintf(stderr, "agentca: %s\n", msg)
	return 1
}

// newApp builds the command tree; an unknown command's name goes to
// *notFound.
func newApp(stdout, stderr io.Writer, notFound *string) *cli.App {
	app := &cli.App{
		Name:      "agentca",
		Usage:     "a private CA for minutes-lived SPIFFE certificates",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-format", Usage: "log format: text or json (default: agentca.json's, else text)", EnvVars: []string{"AGENTCA_LOG_FORMAT"}},
			&cli.StringFlag{Name: "log-level", Usage: "log level: debug, info, warn or error", EnvVars: []string{"AGENTCA_LOG_LEVEL"}},
		},
		Commands: []*cli.Command{
			initCommand(),
			serveCommand(),
			tokenCommand(),
			enrollCommand(),
			renewCommand(),
			jwtSVIDCommand(),
			certsCommand(),
			revokeCommand(),
			ocspCommand(),
			tofuCommand(),
			logCommand(),
			policyCommand(),
			taskCommand(),
			anchorsCommand(),
			workloadsCommand(),
			nodeAgentCommand(),
			migrateCommand(),
			healthCommand(),
			versionCommand(),
			backupCommand(),
			storeCommand(),
		},
		Version: strings.SplitN(versionText(), "\n", 2)[0],
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &usageError{err.Error()}
		},
		CommandNotFound: func(_ *cli.Context, name string) { *notFound = name },
		ExitErrHandler:  func(*cli.Context, error) {},
	}
	for _, c := range app.Commands {
		setUsageHandler(c)
	}
	prepareFlags(app.Commands, nil)
	return app
}

func setUsageHandler(c *cli.Command) {
	c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return &usageError{err.Error()} }
	for _, sub := range c.Subcommands {
		setUsageHandler(sub)
	}
}

// oneLine keeps an error to one line on stderr.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
