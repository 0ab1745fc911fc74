package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// This file holds what makes the command line explain itself: every flag
// has its AGENTCA_* variable, flags are accepted after positional
// arguments, `agentca version`, and error messages that say how to fix
// the mistake (a duration's form, a TLS trust failure's likely cause).

func init() {
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprint(c.App.Writer, versionText()) }
}

// versionText is the module version, the VCS commit the binary was built
// from (runtime/debug.ReadBuildInfo) and the Go version.
func versionText() string {
	version, commit, when, modified := "(unknown)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "agentca %s\n", version)
	switch {
	case commit == "":
		b.WriteString("commit unknown (built without VCS information)\n")
	case modified:
		fmt.Fprintf(&b, "commit %s %s (with uncommitted changes)\n", commit, when)
	default:
		fmt.Fprintf(&b, "commit %s %s\n", commit, when)
	}
	fmt.Fprintf(&b, "%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit it was built from and the Go version (also --version)",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("version takes no arguments")
			}
			_, err := io.WriteString(c.App.Writer, versionText())
			return err
		},
	}
}

// prepareFlags walks the command tree: a flag without an environment
// variable gets AGENTCA_<COMMAND>_<SUBCOMMAND>_<FLAG> (the command path
// keeps flags such as --json apart), and a boolean flag does not print
// "(default: false)" in --help.
func prepareFlags(cmds []*cli.Command, path []string) {
	for _, c := range cmds {
		p := append(append([]string(nil), path...), c.Name)
		for _, f := range c.Flags {
			env := []string{envName(p, f.Names()[0])}
			switch f := f.(type) {
			case *cli.StringFlag:
				f.EnvVars = orDefault(f.EnvVars, env)
			case *cli.BoolFlag:
				f.EnvVars = orDefault(f.EnvVars, env)
				f.DisableDefaultText = f.DisableDefaultText || !f.Value
			case *cli.DurationFlag:
				f.EnvVars = orDefault(f.EnvVars, env)
			case *cli.IntFlag:
				f.EnvVars = orDefault(f.EnvVars, env)
			case *cli.Int64Flag:
				f.EnvVars = orDefault(f.EnvVars, env)
			case *cli.Uint64Flag:
				f.EnvVars = orDefault(f.EnvVars, env)
			case *cli.StringSliceFlag:
				f.EnvVars = orDefault(f.EnvVars, env)
			}
		}
		prepareFlags(c.Subcommands, p)
	}
}

func envName(path []string, flag string) string {
	return strings.ToUpper(strings.ReplaceAll("AGENTCA_"+strings.Join(path, "_")+"_"+flag, "-", "_"))
}

func orDefault(have, def []string) []string {
	if len(have) > 0 {
		return have
	}
	return def
}

// reorderArgs moves the flags a user wrote after positional arguments
// (`anchors activate ID --force`, `task end ID --json`) before them, where
// the flag parser looks, and returns the command path it found. A flag
// the command does not know stays a flag, so the error names it; "--"
// ends the flags as usual.
func reorderArgs(app *cli.App, args []string) ([]string, []*cli.Command) {
	if len(args) < 2 {
		return args, nil
	}
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" && args[i] != "--" {
		if f := findFlag(app.Flags, args[i]); f != nil && takesValue(f) && !strings.Contains(args[i], "=") {
			i++
		}
		i++
	}
	var path []*cli.Command
	cmds := app.Commands
	for i < len(args) {
		c := findCommand(cmds, args[i])
		if c == nil {
			break
		}
		path = append(path, c)
		cmds = c.Subcommands
		i++
	}
	if len(path) == 0 || len(path[len(path)-1].Subcommands) > 0 {
		return args, path
	}
	leaf := path[len(path)-1]
	var flags, positional []string
	rest := args[i:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			positional = append(positional, rest[j:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		if f := findFlag(leaf.Flags, a); f != nil && takesValue(f) && !strings.Contains(a, "=") && j+1 < len(rest) {
			j++
			flags = append(flags, rest[j])
		}
	}
	out := append(append(append([]string(nil), args[:i]...), flags...), positional...)
	return out, path
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// findFlag finds the flag an argument such as --ttl=5m or -json names.
func findFlag(flags []cli.Flag, arg string) cli.Flag {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	d, ok := f.(cli.DocGenerationFlag)
	return ok && d.TakesValue()
}

var (
	badFlagValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([A-Za-z0-9-]+): `)
	badEnvValue  = regexp.MustCompile(`^could not parse "(.*)" as duration value from environment variable "([A-Z0-9_]+)" for flag ([A-Za-z0-9-]+): `)
)

// explain rewrites an error into one that says how to fix it, given the
// command that ran (path, from reorderArgs).
func explain(msg string, err error, path []*cli.Command) string {
	if m := badFlagValue.FindStringSubmatch(msg); m != nil && len(path) > 0 {
		if _, ok := findFlag(path[len(path)-1].Flags, m[2]).(*cli.DurationFlag); ok {
			return fmt.Sprintf("--%s: %q is not a duration: write it like 15m, 90s or 1h30m", m[2], m[1])
		}
	}
	if m := badEnvValue.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s (--%s): %q is not a duration: write it like 15m, 90s or 1h30m", m[2], m[3], m[1])
	}
	if trustFailure(msg, err) {
		if len(path) > 0 && path[0].Name == "log" {
			return msg + " (hint: log commands talk to the CA's plain HTTP URL, public_urls.http, e.g. --ca http://127.0.0.1:8080)"
		}
		return msg + " (hint: the CA's certificate does not chain to the roots given: wrong --root? pin the CA's root with --fingerprint instead; after a trust-anchor rotation, fetch roots.pem again from /v1/roots)"
	}
	return msg
}

// trustFailure tells a failed TLS certificate verification.
func trustFailure(msg string, err error) bool {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &he) || errors.As(err, &cv) {
		return true
	}
	return strings.Contains(msg, "tls: failed to verify certificate") || strings.Contains(msg, "x509: certificate signed by unknown authority")
}
