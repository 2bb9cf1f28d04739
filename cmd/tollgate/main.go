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
	root := newRootCommand()
	err := root.Execute()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "tollgate",
		Short: "Replicated budgets, quotas and rate limits with exactly-once decisions",
		Long: `tollgate is a Raft-replicated cluster that decides, exactly once and in one
agreed order, whether work may spend from a budget or a rate limit.

Run a node with 'tollgate serve' ('tollgate serve --dev' for a local single
node). The other commands talk to a running node at --addr.

Every flag can also be set with an environment variable: TOLLGATE_ followed by
the flag name in upper case with '-' as '_' (e.g. TOLLGATE_DATA_DIR,
TOLLGATE_ADDR, TOLLGATE_TENANT). A flag on the command line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}
	root.AddCommand(newServeCommand())
	for _, add := range clientCommands {
		root.AddCommand(add())
	}
	return root
}

// clientCommands are the user subcommands (budget, limit, status, ...),
// registered by their files.
var clientCommands []func() *cobra.Command

// applyEnv sets every flag not given on the command line from TOLLGATE_<NAME>.
func applyEnv(cmd *cobra.Command) error {
	var firstErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || firstErr != nil {
			return
		}
		name := "TOLLGATE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := cmd.Flags().Set(f.Name, v); err != nil {
				firstErr = fmt.Errorf("environment %s=%q: %w", name, v, err)
			}
		}
	})
	return firstErr
}
