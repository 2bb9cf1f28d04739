package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

func init() { clientCommands = append(clientCommands, newLimitCommand) }

func newLimitCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("limit",
		"Create rate-limit policies and check keys against them",
		`A rate-limit policy allows --limit cost units per --window for each key
(user, API key, IP...) with one of six algorithms. Every check is a decision
taken in log order on the leader. A DENIED check exits with code 3; a failed
call with 1; a wrong command line with 2.`,
		`  tollgate limit create api --tenant acme --algorithm token-bucket --limit 10 --window 1s --burst 20
  tollgate limit check api --tenant acme --key user-42`))
	cf := addClientFlags(cmd, true)
	cmd.AddCommand(
		newLimitCreateCommand(cf),
		newLimitGetCommand(cf),
		newLimitListCommand(cf),
		newLimitUpdateCommand(cf),
		newLimitDeleteCommand(cf),
		newLimitCheckCommand(cf),
	)
	return cmd
}

// policyFlags are the policy settings of limit create and limit update.
type policyFlags struct {
	algorithm enumFlag[tollgatev1.Algorithm]
	limit     int64
	window    durationText
	burst     int64
	scales    priorityScales
}

// policyFlagPaths maps each policy flag to its update_mask path.
var policyFlagPaths = []struct{ flag, path string }{
	{"algorithm", "algorithm"},
	{"limit", "limit"},
	{"window", "window"},
	{"burst", "burst"},
	{"priority-scale", "priority_scales"},
}

func addPolicyFlags(cmd *cobra.Command, pf *policyFlags, required string) {
	fl := cmd.Flags()
	enumVar(fl, &pf.algorithm, "algorithm", "rate-limit algorithm"+required)
	fl.Int64Var(&pf.limit, "limit", 0, "cost units allowed per window, 1 to 1e12"+required)
	fl.Var(&pf.window, "window", `window length, 1ms to 366 days, e.g. "1s", "1h"`+required)
	fl.Int64Var(&pf.burst, "burst", 0, "bucket capacity for token-bucket, leaky-bucket and gcra (default: --limit)")
	fl.Var(&pf.scales, "priority-scale", `checks at PRIORITY may use only PERCENT (1-100) of the limit; repeatable`)
}

func (pf *policyFlags) policy(id string) *tollgatev1.Policy {
	return &tollgatev1.Policy{Id: id, Algorithm: pf.algorithm.value, Limit: pf.limit, Window: string(pf.window),
		Burst: pf.burst, PriorityScales: pf.scales}
}

func newLimitCreateCommand(cf *clientFlags) *cobra.Command {
	var (
		pf        policyFlags
		requestID string
	)
	cmd := &cobra.Command{
		Use:   "create ID --algorithm ALGORITHM --limit N --window DURATION",
		Short: "Create a rate-limit policy",
		Long: `Create a rate-limit policy: --limit cost units per --window for each key.

Algorithms: token-bucket (a bucket of --burst tokens refilled at
limit/window), leaky-bucket (a meter that drains at limit/window and holds
--burst), fixed-window (windows aligned to the Unix epoch), sliding-window-log
(exact, limit at most 10000), sliding-window-counter (previous window
weighted by overlap), gcra (emission interval window/limit, tolerance of
--burst cells).

--priority-scale P=PCT keeps checks at priority P to PCT percent of the
limit, so the rest stays for other priorities.`,
		Example: `  tollgate limit create api --tenant acme --algorithm token-bucket --limit 10 --window 1s --burst 20
  tollgate limit create login --tenant acme --algorithm sliding-window-log --limit 5 --window 1m
  tollgate limit create batch --tenant acme --algorithm gcra --limit 100 --window 1m --priority-scale 0=50 --priority-scale 1=80`,
		Args: argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "algorithm", "limit", "window"); err != nil {
				return err
			}
			resp, err := unary(cmd, cf, rateLimitService, tollgatev1connect.RateLimitServiceClient.CreatePolicy,
				&tollgatev1.CreatePolicyRequest{Tenant: cf.tenant, Policy: pf.policy(args[0]), RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, append(policyFields(resp.Policy), field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})...)
		},
	}
	addPolicyFlags(cmd, &pf, " (required)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newLimitGetCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "get ID",
		Short:   "Show a rate-limit policy and how many keys have live counters",
		Example: `  tollgate limit get api --tenant acme`,
		Args:    argsExactly("ID"),
	}
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := unary(cmd, cf, rateLimitService, tollgatev1connect.RateLimitServiceClient.GetPolicy,
			&tollgatev1.GetPolicyRequest{Tenant: cf.tenant, PolicyId: args[0],
				Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		return printFields(cmd, cf, resp, append(policyFields(resp.Policy),
			field{"active keys", formatUint(resp.ActiveKeys)},
			field{"read", formatReadInfo(resp.ReadInfo)})...)
	}
	return cmd
}

func newLimitListCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's rate-limit policies in id order",
		Long: `List the tenant's rate-limit policies in id order, one page at a time; the
token for the next page is printed on stderr (table) or is next_page_token
(json). --all follows the tokens to the end and prints one list.`,
		Example: `  tollgate limit list --tenant acme
  tollgate limit list --tenant acme --all --output json`,
		Args: argsExactly(),
	}
	pf := addPageFlags(cmd)
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := call(cmd, cf, func(ctx context.Context, c *client.Client) (pages[*tollgatev1.ListPoliciesResponse], error) {
			return fetchPages(pf, func(token string) (*tollgatev1.ListPoliciesResponse, error) {
				resp, err := c.RateLimits.ListPolicies(ctx, connect.NewRequest(&tollgatev1.ListPoliciesRequest{Tenant: cf.tenant,
					PageSize: pf.size, PageToken: token, Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)}))
				if err != nil {
					return nil, err
				}
				return resp.Msg, nil
			}, func(all, page *tollgatev1.ListPoliciesResponse) {
				all.Policies = append(all.Policies, page.Policies...)
				all.NextPageToken = page.NextPageToken
				all.ReadInfo = page.ReadInfo
			})
		})
		if err != nil {
			return err
		}
		list := resp.all
		err = printReply(cmd, cf, list, func(w io.Writer) {
			rows := make([][]string, len(list.Policies))
			for i, p := range list.Policies {
				rows[i] = []string{p.Id, enumWord(p.Algorithm), formatInt(p.Limit), p.Window, formatInt(p.Burst),
					orDash(priorityScales(p.PriorityScales).String())}
			}
			writeTable(w, []string{"ID", "ALGORITHM", "LIMIT", "WINDOW", "BURST", "PRIORITY SCALES"}, rows)
		})
		if err != nil {
			return err
		}
		return resp.finish(cmd, cf, list.NextPageToken)
	}
	return cmd
}

func newLimitUpdateCommand(cf *clientFlags) *cobra.Command {
	var (
		pf        policyFlags
		requestID string
	)
	cmd := &cobra.Command{
		Use:   "update ID [--algorithm A] [--limit N] [--window D] [--burst N] [--priority-scale P=PCT]...",
		Short: "Change a rate-limit policy",
		Long: `Change a rate-limit policy. Only the flags given are changed; at least one is
required. The --priority-scale flags given replace all of the policy's
scales; --priority-scale "" removes them.`,
		Example: `  tollgate limit update api --tenant acme --limit 20
  tollgate limit update api --tenant acme --priority-scale ""`,
		Args: argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var paths []string
			for _, m := range policyFlagPaths {
				if cmd.Flags().Changed(m.flag) {
					paths = append(paths, m.path)
				}
			}
			if len(paths) == 0 {
				return usageErrorf(cmd, "nothing to update: give at least one of --algorithm, --limit, --window, --burst, --priority-scale")
			}
			resp, err := unary(cmd, cf, rateLimitService, tollgatev1connect.RateLimitServiceClient.UpdatePolicy,
				&tollgatev1.UpdatePolicyRequest{Tenant: cf.tenant, Policy: pf.policy(args[0]),
					UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, append(policyFields(resp.Policy), field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})...)
		},
	}
	addPolicyFlags(cmd, &pf, "")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newLimitDeleteCommand(cf *clientFlags) *cobra.Command {
	var requestID string
	cmd := &cobra.Command{
		Use:     "delete ID",
		Short:   "Delete a rate-limit policy and its counters",
		Example: `  tollgate limit delete api --tenant acme`,
		Args:    argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, rateLimitService, tollgatev1connect.RateLimitServiceClient.DeletePolicy,
				&tollgatev1.DeletePolicyRequest{Tenant: cf.tenant, PolicyId: args[0], RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp,
				field{"deleted", args[0]},
				field{"removed keys", formatUint(resp.RemovedKeys)},
				field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})
		},
	}
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newLimitCheckCommand(cf *clientFlags) *cobra.Command {
	var (
		key, requestID string
		cost           int64
		priority       uint32
	)
	cmd := &cobra.Command{
		Use:   "check ID --key KEY",
		Short: "Take --cost units from a key's counter if they fit",
		Long: `Take --cost units (default 1) from the counter of --key under the policy if
they fit. Prints the decision; exits with 3 when denied (retry after says
when the same cost can fit again). Repeating the command with the same
--request-id returns the first decision and takes nothing again.`,
		Example: `  tollgate limit check api --tenant acme --key user-42
  tollgate limit check api --tenant acme --key user-42 --cost 5 --priority 1`,
		Args: argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "key"); err != nil {
				return err
			}
			req := &tollgatev1.RateLimitServiceCheckRequest{Tenant: cf.tenant, PolicyId: args[0], Key: key,
				Priority: priority, RequestId: requestID}
			if cmd.Flags().Changed("cost") {
				req.Cost = &cost
			}
			resp, err := unary(cmd, cf, rateLimitService, tollgatev1connect.RateLimitServiceClient.Check, req)
			if err != nil {
				return err
			}
			retryAfter := ""
			if !resp.Allowed && resp.RetryAfter.AsDuration() > 0 {
				retryAfter = formatDuration(resp.RetryAfter)
			}
			return printDecision(cmd, cf, resp, resp.Allowed,
				field{"policy", args[0]},
				field{"key", key},
				field{"remaining", formatInt(resp.Remaining)},
				field{"limit", formatInt(resp.Limit)},
				field{"reset after", formatDuration(resp.ResetAfter)},
				field{"retry after", retryAfter},
				field{"reason", formatReason(resp.Reason)},
				field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&key, "key", "", "the counter key: user, API key, IP... (required)")
	fl.Int64Var(&cost, "cost", 1, "units this check takes")
	fl.Uint32Var(&priority, "priority", 0, "the request's priority (see --priority-scale of limit create)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

// policyFields are the key/value lines of a policy.
func policyFields(p *tollgatev1.Policy) []field {
	return []field{
		{"id", p.GetId()},
		{"algorithm", enumWord(p.GetAlgorithm())},
		{"limit", formatInt(p.GetLimit())},
		{"window", p.GetWindow()},
		{"burst", formatInt(p.GetBurst())},
		{"priority scales", priorityScales(p.GetPriorityScales()).String()},
		{"version", formatUint(p.GetVersion())},
		{"created", formatTime(p.GetCreatedAt())},
		{"updated", formatTime(p.GetUpdatedAt())},
	}
}

// priorityScales is the repeatable --priority-scale PRIORITY=PERCENT flag.
type priorityScales []*tollgatev1.PriorityScale

func (s priorityScales) String() string {
	words := make([]string, len(s))
	for i, ps := range s {
		words[i] = fmt.Sprintf("%d=%d", ps.GetPriority(), ps.GetPercent())
	}
	return strings.Join(words, ",")
}

// Set adds one scale; an empty value adds none, so that
// `limit update --priority-scale ""` sends an empty list.
func (s *priorityScales) Set(v string) error {
	if v == "" {
		return nil
	}
	priority, percent, ok := strings.Cut(v, "=")
	p, perr := strconv.ParseUint(priority, 10, 32)
	pct, pcterr := strconv.ParseUint(percent, 10, 32)
	if !ok || perr != nil || pcterr != nil {
		return fmt.Errorf("want PRIORITY=PERCENT such as 1=50")
	}
	*s = append(*s, &tollgatev1.PriorityScale{Priority: uint32(p), Percent: uint32(pct)})
	return nil
}

func (s *priorityScales) Type() string { return "PRIORITY=PERCENT" }
