// Command tollgate is the one tollgate binary: `tollgate serve` runs a node;
// the other subcommands are clients of a running cluster. Wiring and
// configuration live here and in package embed; nothing else composes the
// parts.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	// The zone database is compiled in so FROM-scratch images and hosts
	// without /usr/share/zoneinfo resolve budget timezones.
	_ "time/tzdata"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit code (e.g. 3 for a denied decision).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	code, msg := exitStatus(newRootCommand().Execute())
	if msg != "" {
		fmt.Fprintln(os.Stderr, msg)
	}
	os.Exit(code)
}

// exitStatus maps what a command returned to the process's exit code and
// message: 0 ok, 1 error, 2 usage error, 3 denied (see DESIGN.md).
func exitStatus(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, ee.msg
	}
	if strings.HasPrefix(err.Error(), "unknown command ") {
		return 2, "error: " + err.Error() + "\nRun 'tollgate --help' for usage."
	}
	return 1, "error: " + err.Error()
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "tollgate",
		Short: "Replicated budgets, quotas and rate limits with exactly-once decisions",
		Long: `tollgate is a Raft-replicated cluster that decides, exactly once and in one
agreed order, whether work may spend from a budget or a rate limit.

Run a node with 'tollgate serve' ('tollgate serve --dev' for a local single
node). The other commands talk to a running node at --addr.

Every flag of 'serve', and the client flags --addr, --tenant, --output and
--timeout, can also be set with an environment variable: TOLLGATE_ followed by
the flag name in upper case with '-' as '_' (e.g. TOLLGATE_DATA_DIR,
TOLLGATE_ADDR, TOLLGATE_TENANT). A flag on the command line wins. Flags that
name one request (--amount, --request-id, ...) never come from the
environment.

A cluster with authentication on wants a bearer token (a JWT) with every
call: put it in a file and pass --token-file, or set TOLLGATE_TOKEN to the
token itself.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}
	withUsageErrors(root) // flag errors anywhere are usage errors (exit 2)
	root.AddCommand(newServeCommand())
	for _, add := range clientCommands {
		root.AddCommand(add())
	}
	return root
}

// clientCommands are the user subcommands (budget, limit, status, ...),
// registered by their files.
var clientCommands []func() *cobra.Command

// envClientFlags are the client flags the environment may set; the flags of
// one request (amount, request id, key...) must never leak in from it.
var envClientFlags = map[string]bool{"addr": true, "tenant": true, "output": true, "timeout": true, "token-file": true, "tls-ca": true, "tls-cert": true, "tls-key": true}

// applyEnv sets flags not given on the command line from TOLLGATE_<NAME>: all
// of serve's, and the client flags in envClientFlags.
func applyEnv(cmd *cobra.Command) error {
	var firstErr error
	isServe := cmd.Name() == "serve"
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || firstErr != nil || (!isServe && !envClientFlags[f.Name]) {
			return
		}
		name := "TOLLGATE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := cmd.Flags().Set(f.Name, v); err != nil {
				firstErr = &exitError{code: 2, msg: fmt.Sprintf("error: environment %s=%q: %v", name, v, err)}
			}
		}
	})
	return firstErr
}
