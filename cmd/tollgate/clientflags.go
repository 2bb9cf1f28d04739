package main

// The flags, argument checks, errors and the one call path shared by the
// client subcommands (budget, limit, status).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

// Exit codes of the client subcommands.
const (
	// exitFailure: the call failed (the server refused it, or no answer).
	exitFailure = 1
	// exitUsage: the command line is wrong; nothing was sent.
	exitUsage = 2
	// exitDenied: the call succeeded and the decision was DENIED.
	exitDenied = 3
)

const (
	// defaultAddr is where `tollgate serve --dev` listens.
	defaultAddr = "localhost:7070"
	// defaultTimeout bounds a whole command, retries and pages included.
	defaultTimeout = 10 * time.Second
	// listPagesMax bounds how many pages --all follows, so a server that
	// keeps returning a next_page_token cannot loop the client forever.
	listPagesMax = 1000
)

// clientFlags are the connection and output flags every client command takes.
type clientFlags struct {
	addr    string
	tenant  string
	output  outputFormat
	timeout time.Duration
	// tokenFile holds the bearer token (else $TOLLGATE_TOKEN).
	tokenFile string
	// tlsCA (HTTPS, trusting this CA) and an optional client certificate.
	tlsCA, tlsCert, tlsKey string
	// needTenant is set for commands that act within a tenant.
	needTenant bool
}

// addClientFlags adds --addr, --output, --timeout and (withTenant) --tenant
// as persistent flags of cmd, so its subcommands share them.
func addClientFlags(cmd *cobra.Command, withTenant bool) *clientFlags {
	cf := &clientFlags{output: outputTable, needTenant: withTenant}
	fl := cmd.PersistentFlags()
	fl.StringVar(&cf.addr, "addr", defaultAddr, "HOST:PORT of any node of the cluster")
	if withTenant {
		fl.StringVar(&cf.tenant, "tenant", "", "tenant the objects belong to (required; or set TOLLGATE_TENANT)")
	}
	fl.Var(&cf.output, "output", "output format: table, json (the API's JSON of the response) or csv (cost report only)")
	fl.DurationVar(&cf.timeout, "timeout", defaultTimeout, "bound on the whole command, retries included")
	fl.StringVar(&cf.tokenFile, "token-file", "", "file holding the bearer token (JWT) for a cluster with authentication (default: $TOLLGATE_TOKEN)")
	fl.StringVar(&cf.tlsCA, "tls-ca", "", "speak HTTPS to a cluster serving TLS, trusting this CA certificate (PEM)")
	fl.StringVar(&cf.tlsCert, "tls-cert", "", "client certificate (PEM) to present over HTTPS (with --tls-key)")
	fl.StringVar(&cf.tlsKey, "tls-key", "", "key of --tls-cert (PEM)")
	return cf
}

// tokenBytesMax bounds a token file.
const tokenBytesMax = 16 << 10

// clientOptions are the client.New options the flags ask for.
func (cf *clientFlags) clientOptions(cmd *cobra.Command) ([]client.Option, error) {
	opts := []client.Option{client.WithRequestTimeout(cf.timeout)}
	token := strings.TrimSpace(os.Getenv("TOLLGATE_TOKEN"))
	if cf.tokenFile != "" {
		raw, err := os.ReadFile(cf.tokenFile)
		if err != nil {
			return nil, usageErrorf(cmd, "--token-file: %v", err)
		}
		if len(raw) > tokenBytesMax {
			return nil, usageErrorf(cmd, "--token-file %s: larger than %d bytes", cf.tokenFile, tokenBytesMax)
		}
		if token = strings.TrimSpace(string(raw)); token == "" {
			return nil, usageErrorf(cmd, "--token-file %s is empty", cf.tokenFile)
		}
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return nil, usageErrorf(cmd, "the token holds white space: want one JWT")
	}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	if (cf.tlsCert == "") != (cf.tlsKey == "") {
		return nil, usageErrorf(cmd, "--tls-cert and --tls-key go together")
	}
	if cf.tlsCert != "" && cf.tlsCA == "" {
		return nil, usageErrorf(cmd, "--tls-cert needs --tls-ca (the cluster's CA)")
	}
	if cf.tlsCA != "" {
		pemBytes, err := os.ReadFile(cf.tlsCA)
		if err != nil {
			return nil, usageErrorf(cmd, "--tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, usageErrorf(cmd, "--tls-ca %s holds no PEM certificate", cf.tlsCA)
		}
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if cf.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(cf.tlsCert, cf.tlsKey)
			if err != nil {
				return nil, usageErrorf(cmd, "--tls-cert/--tls-key: %v", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	return opts, nil
}

// check validates the shared flags once the environment has been applied.
func (cf *clientFlags) check(cmd *cobra.Command) error {
	if cf.needTenant && cf.tenant == "" {
		return usageErrorf(cmd, "--tenant is required (or set TOLLGATE_TENANT)")
	}
	if cf.timeout <= 0 {
		return usageErrorf(cmd, "--timeout %s: must be positive", cf.timeout)
	}
	return nil
}

// readFlags are the consistency flags of read commands.
type readFlags struct {
	consistency  enumFlag[tollgatev1.Consistency]
	maxStaleness durationText
}

func addReadFlags(cmd *cobra.Command) *readFlags {
	rf := &readFlags{consistency: enumFlag[tollgatev1.Consistency]{value: tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE}}
	enumVar(cmd.Flags(), &rf.consistency, "consistency", "read level (linearizable sees every acknowledged write; leader skips the quorum round; stale reads any node)")
	cmd.Flags().Var(&rf.maxStaleness, "max-staleness", "with --consistency stale: fail rather than answer from a state older than this")
	return rf
}

// pageFlags are the paging flags of list commands.
type pageFlags struct {
	size  uint32
	token string
	all   bool
}

func addPageFlags(cmd *cobra.Command) *pageFlags {
	pf := &pageFlags{}
	cmd.Flags().Uint32Var(&pf.size, "page-size", 0, "items per page, 1-1000 (default: the server's, 100)")
	cmd.Flags().StringVar(&pf.token, "page-token", "", "continue a listing from a previous page's next page token")
	cmd.Flags().BoolVar(&pf.all, "all", false, fmt.Sprintf("follow next page tokens to the end (at most %d pages)", listPagesMax))
	return pf
}

// addRequestIDFlag adds --request-id to a command that changes state.
func addRequestIDFlag(cmd *cobra.Command, requestID *string) {
	cmd.Flags().StringVar(requestID, "request-id", "", "idempotency key: repeating the command with the same id returns the first reply and changes nothing again (default: a random id)")
}

// newGroupCommand returns a command that only holds subcommands. Called
// with an unknown subcommand it is a usage error rather than cobra's help
// with exit code 0.
func newGroupCommand(use, short, long, example string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if cmd.SuggestionsMinimumDistance <= 0 {
				cmd.SuggestionsMinimumDistance = 2
			}
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return usageErrorf(cmd, "%s", msg)
		},
	}
}

// withUsageErrors makes flag parse errors of cmd and its subcommands usage
// errors (exit code 2).
func withUsageErrors(cmd *cobra.Command) *cobra.Command {
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf(c, "%v", err)
	})
	return cmd
}

// argsExactly accepts exactly the named positional arguments.
func argsExactly(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		if len(names) == 0 {
			return usageErrorf(cmd, "%q takes no arguments; got %q", cmd.CommandPath(), args)
		}
		return usageErrorf(cmd, "%q takes %s; got %d argument(s)", cmd.CommandPath(), strings.Join(names, " "), len(args))
	}
}

// requireFlags fails unless every named flag was given (on the command line
// or through TOLLGATE_<FLAG>). Cobra's own required flags would exit with 1.
func requireFlags(cmd *cobra.Command, names ...string) error {
	var missing []string
	for _, n := range names {
		if !cmd.Flags().Changed(n) {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return usageErrorf(cmd, "required flag(s) %s not set", strings.Join(missing, ", "))
	}
	return nil
}

func usageErrorf(cmd *cobra.Command, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &exitError{code: exitUsage, msg: fmt.Sprintf("error: %s\nRun '%s --help' for usage.", msg, cmd.CommandPath())}
}

// apiError reports a failed call as "error: <connect code>: <message>". The
// server's message names the offending field.
func apiError(err error) error {
	msg := err.Error()
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		msg = cerr.Message()
	}
	return &exitError{code: exitFailure, msg: fmt.Sprintf("error: %s: %s", connect.CodeOf(err), msg)}
}

// deniedError is returned after a DENIED decision has been printed.
func deniedError() error { return &exitError{code: exitDenied} }

// call runs fn with a client for --addr under --timeout and turns its error
// into an API error. It is the one path by which client commands reach the
// cluster.
func call[T any](cmd *cobra.Command, cf *clientFlags, fn func(context.Context, *client.Client) (T, error)) (T, error) {
	var zero T
	if err := cf.check(cmd); err != nil {
		return zero, err
	}
	opts, err := cf.clientOptions(cmd)
	if err != nil {
		return zero, err
	}
	c, err := client.New([]string{cf.addr}, opts...)
	if err != nil {
		return zero, usageErrorf(cmd, "--addr %q: want HOST:PORT", cf.addr)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
	defer cancel()
	out, err := fn(ctx, c)
	if err != nil {
		return zero, apiError(err)
	}
	return out, nil
}

// unary makes one call of a service method, e.g.
// unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.Consume, req).
func unary[S, Req, Resp any](cmd *cobra.Command, cf *clientFlags, service func(*client.Client) S,
	method func(S, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error), req *Req) (*Resp, error) {
	return call(cmd, cf, func(ctx context.Context, c *client.Client) (*Resp, error) {
		resp, err := method(service(c), ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
}

// pages is the result of a listing: the pages fetched, merged into the first.
type pages[R any] struct {
	all R
	// truncated: --all stopped at listPagesMax pages with more to come.
	truncated bool
}

// fetchPages fetches the page at --page-token and, with --all, follows the
// next page tokens, merging each page into the first.
func fetchPages[R interface{ GetNextPageToken() string }](pf *pageFlags, fetch func(token string) (R, error), merge func(all, page R)) (pages[R], error) {
	all, err := fetch(pf.token)
	if err != nil {
		return pages[R]{}, err
	}
	if !pf.all {
		return pages[R]{all: all}, nil
	}
	for n := 1; all.GetNextPageToken() != ""; n++ {
		if n == listPagesMax {
			return pages[R]{all: all, truncated: true}, nil
		}
		page, err := fetch(all.GetNextPageToken())
		if err != nil {
			return pages[R]{}, err
		}
		merge(all, page)
	}
	return pages[R]{all: all}, nil
}

// finish ends a printed listing: a hint for the next page, or (when --all
// was cut short) an error that says where to go on.
func (p pages[R]) finish(cmd *cobra.Command, cf *clientFlags, next string) error {
	if p.truncated {
		return &exitError{code: exitFailure,
			msg: fmt.Sprintf("error: --all stopped after %d pages; continue with --page-token %s", listPagesMax, next)}
	}
	nextPageHint(cmd, cf, next)
	return nil
}

func budgetService(c *client.Client) tollgatev1connect.BudgetServiceClient       { return c.Budgets }
func rateLimitService(c *client.Client) tollgatev1connect.RateLimitServiceClient { return c.RateLimits }
func clusterService(c *client.Client) tollgatev1connect.ClusterServiceClient     { return c.Cluster }

// protoEnum is a generated proto enum type.
type protoEnum interface {
	~int32
	Descriptor() protoreflect.EnumDescriptor
}

// enumWord is how the CLI spells an enum value, in flags and in tables: the
// value's name without the enum's prefix, in lower case with '-' for '_'
// (PERIOD_MONTH is "month", ALGORITHM_TOKEN_BUCKET is "token-bucket").
func enumWord[E protoEnum](v E) string {
	d := v.Descriptor()
	ev := d.Values().ByNumber(protoreflect.EnumNumber(v))
	if ev == nil {
		return strconv.Itoa(int(v))
	}
	// buf's STANDARD lint makes the zero value <PREFIX>UNSPECIFIED.
	prefix := strings.TrimSuffix(string(d.Values().ByNumber(0).Name()), "UNSPECIFIED")
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(string(ev.Name()), prefix)), "_", "-")
}

// enumWords lists the words of every value but the unspecified one.
func enumWords[E protoEnum]() []string {
	var zero E
	values := zero.Descriptor().Values()
	var words []string
	for i := range values.Len() {
		if n := values.Get(i).Number(); n != 0 {
			words = append(words, enumWord(E(n)))
		}
	}
	return words
}

// enumFlag is a flag whose value is one of an enum's words; anything else
// is a usage error that lists the valid words. The zero value means "not
// given".
type enumFlag[E protoEnum] struct {
	value E
}

func (f *enumFlag[E]) String() string {
	if f.value == 0 {
		return ""
	}
	return enumWord(f.value)
}

func (f *enumFlag[E]) Set(s string) error {
	var zero E
	values := zero.Descriptor().Values()
	for i := range values.Len() {
		if n := values.Get(i).Number(); n != 0 && enumWord(E(n)) == s {
			f.value = E(n)
			return nil
		}
	}
	return fmt.Errorf("want one of %s", strings.Join(enumWords[E](), ", "))
}

// Type names the enum ("period", "algorithm"); enumVar lists the words.
func (f *enumFlag[E]) Type() string {
	var zero E
	return strings.ToLower(string(zero.Descriptor().Name()))
}

// enumVar defines an enum flag whose usage ends with the valid words.
func enumVar[E protoEnum](fl *pflag.FlagSet, f *enumFlag[E], name, usage string) {
	fl.Var(f, name, usage+": "+strings.Join(enumWords[E](), ", "))
}

// durationText is a flag holding a Go duration ("30s", "36h") as typed: the
// server checks ranges and its messages then quote the user's own text.
type durationText string

func (d *durationText) String() string { return string(*d) }

func (d *durationText) Set(s string) error {
	if _, err := time.ParseDuration(s); err != nil {
		return errors.New(`want a Go duration such as "250ms", "30s" or "36h"`)
	}
	*d = durationText(s)
	return nil
}

func (d *durationText) Type() string { return "duration" }

// uint32List is a comma-separated list flag ("50,80,100"); an empty value
// is an empty list (e.g. to clear thresholds).
type uint32List []uint32

func (l *uint32List) String() string {
	words := make([]string, len(*l))
	for i, v := range *l {
		words[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(words, ",")
}

func (l *uint32List) Set(s string) error {
	list := uint32List{}
	if s != "" {
		for w := range strings.SplitSeq(s, ",") {
			v, err := strconv.ParseUint(strings.TrimSpace(w), 10, 32)
			if err != nil {
				return fmt.Errorf("%q is not a whole number; want a list such as 50,80,100", w)
			}
			list = append(list, uint32(v))
		}
	}
	*l = list
	return nil
}

func (l *uint32List) Type() string { return "list" }
