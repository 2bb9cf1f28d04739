package main

import (
	"context"
	"fmt"
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

func init() { clientCommands = append(clientCommands, newBudgetCommand) }

func newBudgetCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("budget",
		"Create budgets and spend from them",
		`Budgets are amounts of money in one currency per period. Every consume,
reserve and commit is decided exactly once, in log order, against the budget
and all its ancestors.

Amounts are decimal strings ("12.50", at most 6 fractional digits) and are
printed exactly as the API returns them. A DENIED decision exits with code 3;
a failed call with 1; a wrong command line with 2.`,
		`  tollgate budget create llm --tenant acme --amount 1000.00 --currency USD --period month
  tollgate budget consume llm --tenant acme --amount 0.0125
  TOLLGATE_TENANT=acme tollgate budget list --all --output json`))
	cf := addClientFlags(cmd, true)
	cmd.AddCommand(
		newBudgetCreateCommand(cf),
		newBudgetGetCommand(cf),
		newBudgetListCommand(cf),
		newBudgetUpdateCommand(cf),
		newBudgetDeleteCommand(cf),
		newBudgetCheckCommand(cf),
		newBudgetConsumeCommand(cf),
		newBudgetReserveCommand(cf),
		newBudgetCommitCommand(cf),
		newBudgetReleaseCommand(cf),
	)
	return cmd
}

func newBudgetCreateCommand(cf *clientFlags) *cobra.Command {
	var (
		budget       tollgatev1.Budget
		period       = enumFlag[tollgatev1.Period]{value: tollgatev1.Period_PERIOD_NONE}
		customPeriod durationText
		enforcement  = enumFlag[tollgatev1.Enforcement]{value: tollgatev1.Enforcement_ENFORCEMENT_HARD}
		thresholds   uint32List
		selector     selectorFlag
		requestID    string
	)
	cmd := &cobra.Command{
		Use:   "create ID --amount AMOUNT --currency CODE",
		Short: "Create a budget",
		Long: `Create a budget of --amount in --currency per --period.

Periods day, week (from Monday), month, quarter and year are aligned in
--timezone; custom periods of --custom-period are aligned to the creation
time; none never resets. --enforcement hard denies what does not fit; soft
and shadow allow it and count what hard would have denied. --thresholds are
utilization percentages recorded once per period when crossed. A budget with
--parent must also fit the parent (same tenant and currency) on every spend.`,
		Example: `  tollgate budget create llm --tenant acme --amount 1000.00 --currency USD --period month --timezone Europe/Berlin --thresholds 50,80,100
  tollgate budget create llm-team-a --tenant acme --amount 200 --currency USD --period month --parent llm
  tollgate budget create burst --tenant acme --amount 5 --currency EUR --period custom --custom-period 36h --enforcement soft
  tollgate budget create ml-llm --tenant acme --amount 500 --currency USD --period month --select team=ml --select model=gpt-4o|claude`,
		Args: argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "amount", "currency"); err != nil {
				return err
			}
			budget.Id = args[0]
			budget.Period = period.value
			budget.CustomPeriod = string(customPeriod)
			budget.Enforcement = enforcement.value
			budget.ThresholdsPercent = thresholds
			budget.Selector = selector.sel
			resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.CreateBudget,
				&tollgatev1.CreateBudgetRequest{Tenant: cf.tenant, Budget: &budget, RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, append(budgetFields(resp.State), field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})...)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&budget.Amount, "amount", "", `the budget per period, a decimal string such as "1000.00" (required)`)
	fl.StringVar(&budget.Currency, "currency", "", `ISO 4217 code such as "USD" (required)`)
	enumVar(fl, &period, "period", "how often the budget starts again")
	fl.Var(&customPeriod, "custom-period", `with --period custom: its length, at least 1s (e.g. "36h")`)
	fl.StringVar(&budget.Timezone, "timezone", "", `IANA timezone periods are aligned in (default "UTC")`)
	enumVar(fl, &enforcement, "enforcement", "what happens to spend that does not fit")
	fl.Var(&thresholds, "thresholds", "utilization percentages to record when crossed, e.g. 50,80,100")
	fl.StringVar(&budget.ParentId, "parent", "", "parent budget every spend must also fit")
	fl.Var(&selector, "select", "recorded costs (tollgate cost record) whose label KEY has one of the values charge this budget; repeat for more keys (all must match)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newBudgetGetCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a budget and its usage in the current period",
		Long: `Show a budget, what was spent and is held in the current period, the
thresholds crossed and the decision counts. --output json also has the
closed periods' history.`,
		Example: `  tollgate budget get llm --tenant acme
  tollgate budget get llm --tenant acme --consistency stale --max-staleness 2s`,
		Args: argsExactly("ID"),
	}
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.GetBudget,
			&tollgatev1.GetBudgetRequest{Tenant: cf.tenant, BudgetId: args[0],
				Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		return printFields(cmd, cf, resp, append(budgetFields(getAsState(resp)), field{"read", formatReadInfo(resp.ReadInfo)})...)
	}
	return cmd
}

func newBudgetListCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's budgets in id order",
		Long: `List the tenant's budgets in id order, one page at a time; the token for
the next page is printed on stderr (table) or is next_page_token (json).
--all follows the tokens to the end and prints one list.`,
		Example: `  tollgate budget list --tenant acme
  tollgate budget list --tenant acme --page-size 50 --page-token <token>
  tollgate budget list --tenant acme --all --output json`,
		Args: argsExactly(),
	}
	pf := addPageFlags(cmd)
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := call(cmd, cf, func(ctx context.Context, c *client.Client) (pages[*tollgatev1.ListBudgetsResponse], error) {
			return fetchPages(pf, func(token string) (*tollgatev1.ListBudgetsResponse, error) {
				resp, err := c.Budgets.ListBudgets(ctx, connect.NewRequest(&tollgatev1.ListBudgetsRequest{Tenant: cf.tenant,
					PageSize: pf.size, PageToken: token, Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)}))
				if err != nil {
					return nil, err
				}
				return resp.Msg, nil
			}, func(all, page *tollgatev1.ListBudgetsResponse) {
				all.Budgets = append(all.Budgets, page.Budgets...)
				all.NextPageToken = page.NextPageToken
				all.ReadInfo = page.ReadInfo
			})
		})
		if err != nil {
			return err
		}
		list := resp.all
		err = printReply(cmd, cf, list, func(w io.Writer) {
			rows := make([][]string, len(list.Budgets))
			for i, st := range list.Budgets {
				b := st.GetBudget()
				rows[i] = []string{b.GetId(), b.GetAmount(), b.GetCurrency(), st.Spent, st.Held, st.Remaining,
					enumWord(b.GetPeriod()), enumWord(b.GetEnforcement()), orDash(b.GetParentId())}
			}
			writeTable(w, []string{"ID", "AMOUNT", "CURRENCY", "SPENT", "HELD", "REMAINING", "PERIOD", "ENFORCEMENT", "PARENT"}, rows)
		})
		if err != nil {
			return err
		}
		return resp.finish(cmd, cf, list.NextPageToken)
	}
	return cmd
}

func newBudgetUpdateCommand(cf *clientFlags) *cobra.Command {
	var (
		budget      tollgatev1.Budget
		enforcement enumFlag[tollgatev1.Enforcement]
		thresholds  uint32List
		selector    selectorFlag
		noSelector  bool
		requestID   string
	)
	cmd := &cobra.Command{
		Use:   "update ID [--amount AMOUNT] [--enforcement MODE] [--thresholds LIST] [--select KEY=V1|V2]... [--no-select]",
		Short: "Change a budget's amount, enforcement or thresholds",
		Long: `Change a budget's amount, enforcement or thresholds. Only the flags given
are changed; at least one is required. --thresholds "" removes all
thresholds. The new amount applies to the current period at once.`,
		Example: `  tollgate budget update llm --tenant acme --amount 1500.00
  tollgate budget update llm --tenant acme --enforcement soft --thresholds 90,100`,
		Args: argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Only the flags given go into the mask: an empty mask would
			// replace all three fields.
			var paths []string
			for _, m := range []struct{ flag, path string }{
				{"amount", "amount"}, {"enforcement", "enforcement"}, {"thresholds", "thresholds_percent"},
				{"select", "selector"}, {"no-select", "selector"},
			} {
				if cmd.Flags().Changed(m.flag) {
					paths = append(paths, m.path)
				}
			}
			if len(paths) == 0 {
				return usageErrorf(cmd, "nothing to update: give at least one of --amount, --enforcement, --thresholds, --select, --no-select")
			}
			if noSelector && selector.sel != nil {
				return usageErrorf(cmd, "--select and --no-select contradict each other")
			}
			budget.Selector = selector.sel
			budget.Id = args[0]
			budget.Enforcement = enforcement.value
			budget.ThresholdsPercent = thresholds
			resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.UpdateBudget,
				&tollgatev1.UpdateBudgetRequest{Tenant: cf.tenant, Budget: &budget,
					UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, append(budgetFields(resp.State), field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})...)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&budget.Amount, "amount", "", `new budget per period, a decimal string such as "1500.00"`)
	enumVar(fl, &enforcement, "enforcement", "new enforcement")
	fl.Var(&thresholds, "thresholds", `new utilization percentages, e.g. 50,80,100 ("" for none)`)
	fl.Var(&selector, "select", "new cost selector: label KEY has one of the values (repeat for more keys; replaces the whole selector)")
	fl.BoolVar(&noSelector, "no-select", false, "remove the cost selector")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newBudgetDeleteCommand(cf *clientFlags) *cobra.Command {
	var requestID string
	cmd := &cobra.Command{
		Use:     "delete ID",
		Short:   "Delete a budget and release its holds",
		Example: `  tollgate budget delete llm --tenant acme`,
		Args:    argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.DeleteBudget,
				&tollgatev1.DeleteBudgetRequest{Tenant: cf.tenant, BudgetId: args[0], RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp,
				field{"deleted", args[0]},
				field{"released holds", formatUint(uint64(resp.ReleasedHolds))},
				field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})
		},
	}
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newBudgetCheckCommand(cf *clientFlags) *cobra.Command {
	var amount string
	cmd := &cobra.Command{
		Use:   "check ID --amount AMOUNT",
		Short: "Ask whether an amount would be allowed, without charging it",
		Long: `Decide like consume would, against the budget and its ancestors, without
charging anything or writing to the log. Exits with 3 when the amount would
be denied.`,
		Example: `  tollgate budget check llm --tenant acme --amount 25.00`,
		Args:    argsExactly("ID"),
	}
	cmd.Flags().StringVar(&amount, "amount", "", `amount to check, a decimal string such as "25.00" (required)`)
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := requireFlags(cmd, "amount"); err != nil {
			return err
		}
		resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.Check,
			&tollgatev1.BudgetServiceCheckRequest{Tenant: cf.tenant, BudgetId: args[0], Amount: amount,
				Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		return printDecision(cmd, cf, resp, resp.Allowed,
			field{"budget", args[0]},
			field{"remaining", resp.Remaining},
			field{"reason", formatReason(resp.Reason)},
			field{"denied by", resp.DeniedByBudgetId},
			field{"would deny", formatBool(resp.WouldDeny)},
			field{"read", formatReadInfo(resp.ReadInfo)})
	}
	return cmd
}

func newBudgetConsumeCommand(cf *clientFlags) *cobra.Command {
	var amount, requestID string
	cmd := &cobra.Command{
		Use:   "consume ID --amount AMOUNT",
		Short: "Charge an amount if it fits the budget and all its ancestors",
		Long: `Charge an amount to the budget and every ancestor if it fits all of them
(hard enforcement), or charge nothing. Prints the decision; exits with 3 when
it was denied. Repeating the command with the same --request-id never
charges twice.`,
		Example: `  tollgate budget consume llm --tenant acme --amount 0.0125
  tollgate budget consume llm --tenant acme --amount 3.20 --request-id job-8812`,
		Args: argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "amount"); err != nil {
				return err
			}
			resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.Consume,
				&tollgatev1.ConsumeRequest{Tenant: cf.tenant, BudgetId: args[0], Amount: amount, RequestId: requestID})
			if err != nil {
				return err
			}
			return printDecision(cmd, cf, resp, resp.Allowed, spendFields(resp)...)
		},
	}
	cmd.Flags().StringVar(&amount, "amount", "", `amount to charge, a decimal string such as "0.0125" (required)`)
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newBudgetReserveCommand(cf *clientFlags) *cobra.Command {
	var (
		amount, requestID string
		ttl               durationText
	)
	cmd := &cobra.Command{
		Use:   "reserve ID --amount AMOUNT --ttl DURATION",
		Short: "Hold an amount for a while, to commit or release later",
		Long: `Put a hold on an amount: it counts against the budget (and its ancestors)
until it is committed, released, or its --ttl (1s to 24h) runs out. Prints
the hold id to pass to commit or release; exits with 3 when denied.`,
		Example: `  tollgate budget reserve llm --tenant acme --amount 2.00 --ttl 30s
  tollgate budget commit <hold-id> --tenant acme --amount 1.37`,
		Args: argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "amount", "ttl"); err != nil {
				return err
			}
			resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.Reserve,
				&tollgatev1.ReserveRequest{Tenant: cf.tenant, BudgetId: args[0], Amount: amount, Ttl: string(ttl), RequestId: requestID})
			if err != nil {
				return err
			}
			return printDecision(cmd, cf, resp, resp.Allowed,
				field{"hold", resp.HoldId},
				field{"budget", args[0]},
				field{"remaining", resp.Remaining},
				field{"expires", formatTime(resp.ExpiresAt)},
				field{"reason", formatReason(resp.Reason)},
				field{"denied by", resp.DeniedByBudgetId},
				field{"would deny", formatBool(resp.WouldDeny)},
				field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})
		},
	}
	cmd.Flags().StringVar(&amount, "amount", "", `amount to hold, a decimal string (required)`)
	cmd.Flags().Var(&ttl, "ttl", `how long the hold lives, 1s to 24h, e.g. "30s" (required)`)
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newBudgetCommitCommand(cf *clientFlags) *cobra.Command {
	var amount, requestID string
	cmd := &cobra.Command{
		Use:   "commit HOLD_ID --amount AMOUNT",
		Short: "Turn a hold into a charge of the actual amount",
		Long: `Charge the actual amount of a hold. Less than the hold releases the rest;
more must fit like a consume. Exits with 3 when denied (the excess does not
fit, or the hold is no longer active).`,
		Example: `  tollgate budget commit 7f3c0a9e --tenant acme --amount 1.37`,
		Args:    argsExactly("HOLD_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "amount"); err != nil {
				return err
			}
			resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.Commit,
				&tollgatev1.CommitRequest{Tenant: cf.tenant, HoldId: args[0], Amount: amount, RequestId: requestID})
			if err != nil {
				return err
			}
			return printDecision(cmd, cf, resp, resp.Allowed, spendFields(commitAsConsume(resp))...)
		},
	}
	cmd.Flags().StringVar(&amount, "amount", "", `actual amount to charge, a decimal string (required)`)
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newBudgetReleaseCommand(cf *clientFlags) *cobra.Command {
	var requestID string
	cmd := &cobra.Command{
		Use:     "release HOLD_ID",
		Short:   "Drop a hold without charging it",
		Example: `  tollgate budget release 7f3c0a9e --tenant acme`,
		Args:    argsExactly("HOLD_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, budgetService, tollgatev1connect.BudgetServiceClient.Release,
				&tollgatev1.ReleaseRequest{Tenant: cf.tenant, HoldId: args[0], RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp,
				field{"budget", resp.BudgetId},
				field{"released", resp.Released},
				field{"remaining", resp.Remaining},
				field{"log index", formatLogIndex(resp.LogIndex)}, field{"receipt", formatReceiptRef(resp.ReceiptRef)})
		},
	}
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

// budgetFields are the key/value lines of a budget and its usage.
func budgetFields(st *tollgatev1.BudgetState) []field {
	b := st.GetBudget()
	period := enumWord(b.GetPeriod())
	if b.GetPeriod() == tollgatev1.Period_PERIOD_CUSTOM {
		period = fmt.Sprintf("%s (%s)", period, b.GetCustomPeriod())
	}
	crossed := make([]uint32, len(st.ThresholdsCrossed))
	for i, c := range st.ThresholdsCrossed {
		crossed[i] = c.Percent
	}
	return []field{
		{"id", b.GetId()},
		{"amount", b.GetAmount()},
		{"currency", b.GetCurrency()},
		{"spent", st.Spent},
		{"held", st.Held},
		{"remaining", st.Remaining},
		{"period", period},
		{"timezone", b.GetTimezone()},
		{"period start", formatTime(st.PeriodStart)},
		{"period end", formatTime(st.PeriodEnd)},
		{"enforcement", enumWord(b.GetEnforcement())},
		{"parent", b.GetParentId()},
		{"selector", formatSelector(b.GetSelector())},
		{"thresholds", formatPercents(b.GetThresholdsPercent())},
		{"crossed", formatPercents(crossed)},
		{"allowed", formatUint(st.AllowedCount)},
		{"denied", formatUint(st.DeniedCount)},
		{"would deny", formatUint(st.WouldDenyCount)},
		{"active holds", formatUint(uint64(st.ActiveHolds))},
		{"version", formatUint(b.GetVersion())},
		{"created", formatTime(b.GetCreatedAt())},
		{"updated", formatTime(b.GetUpdatedAt())},
	}
}

// spendFields are the lines of a consume or commit decision.
func spendFields(r *tollgatev1.ConsumeResponse) []field {
	return []field{
		{"budget", r.BudgetId},
		{"remaining", r.Remaining},
		{"spent", r.Spent},
		{"reason", formatReason(r.Reason)},
		{"denied by", r.DeniedByBudgetId},
		{"would deny", formatBool(r.WouldDeny)},
		{"crossed", formatPercents(r.ThresholdsCrossed)},
		{"log index", formatLogIndex(r.LogIndex)},
		{"receipt", formatReceiptRef(r.ReceiptRef)},
	}
}

// getAsState is the BudgetState part of a GetBudgetResponse (the API keeps
// their field numbers equal).
func getAsState(r *tollgatev1.GetBudgetResponse) *tollgatev1.BudgetState {
	return &tollgatev1.BudgetState{
		Budget:            r.Budget,
		Spent:             r.Spent,
		Held:              r.Held,
		Remaining:         r.Remaining,
		PeriodStart:       r.PeriodStart,
		PeriodEnd:         r.PeriodEnd,
		ThresholdsCrossed: r.ThresholdsCrossed,
		AllowedCount:      r.AllowedCount,
		DeniedCount:       r.DeniedCount,
		WouldDenyCount:    r.WouldDenyCount,
		History:           r.History,
		ActiveHolds:       r.ActiveHolds,
	}
}

// commitAsConsume is a commit decision in the shape of a consume decision
// (the API gives both the same fields).
func commitAsConsume(r *tollgatev1.CommitResponse) *tollgatev1.ConsumeResponse {
	return &tollgatev1.ConsumeResponse{
		Allowed:           r.Allowed,
		Remaining:         r.Remaining,
		Reason:            r.Reason,
		DeniedByBudgetId:  r.DeniedByBudgetId,
		Spent:             r.Spent,
		WouldDeny:         r.WouldDeny,
		ThresholdsCrossed: r.ThresholdsCrossed,
		LogIndex:          r.LogIndex,
		BudgetId:          r.BudgetId,
		ReceiptRef:        r.ReceiptRef,
	}
}
