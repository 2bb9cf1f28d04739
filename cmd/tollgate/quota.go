package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

func init() { clientCommands = append(clientCommands, newQuotaCommand) }

func quotaService(c *client.Client) tollgatev1connect.QuotaServiceClient { return c.Quotas }

func newQuotaCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("quota",
		"Share capacity pools among consumers",
		`A quota pool is a capacity of a resource per period, shared by consumers
under a strategy: fixed amounts, proportional to weights, max-min fair over
reported demands, or by priority. Allocations are recomputed whenever the
capacity, the consumers or their demands change, and never sum past the
capacity. A consume spends against the consumer's allocation (a decision, with
a receipt); a DENIED decision exits with code 3.`,
		`  tollgate quota create gpu --tenant acme --resource gpu-hours --capacity 100 --period month --strategy fair-share
  tollgate quota allocate gpu team-a --tenant acme --weight 2 --min 10
  tollgate quota demand gpu team-a --tenant acme --demand 40
  tollgate quota consume gpu team-a --tenant acme --amount 1.5
  tollgate quota usage gpu --tenant acme`))
	cf := addClientFlags(cmd, true)
	cmd.AddCommand(newQuotaCreateCommand(cf), newQuotaGetCommand(cf, "get", "Show a pool, its consumers and their allocations"),
		newQuotaGetCommand(cf, "usage", "Show a pool's usage in this period and the closed periods"),
		newQuotaListCommand(cf), newQuotaAllocateCommand(cf), newQuotaDemandCommand(cf), newQuotaConsumeCommand(cf), newQuotaRenewCommand(cf))
	return cmd
}

func writePool(w io.Writer, st *tollgatev1.QuotaPoolState, history bool) {
	p := st.Pool
	writeFields(w, []field{{"id", p.Id}, {"resource", p.Resource}, {"capacity", p.Capacity}, {"strategy", enumWord(p.Strategy)},
		{"period", enumWord(p.Period)}, {"timezone", p.Timezone}, {"enforcement", enumWord(p.Enforcement)},
		{"period start", formatTime(st.PeriodStart)}, {"period end", formatTime(st.PeriodEnd)}})
	fmt.Fprintln(w)
	var rows [][]string
	for _, c := range st.Consumers {
		q := c.Consumer
		rows = append(rows, []string{q.Id, formatInt(q.Weight), formatInt(int64(q.Priority)), orDash(q.Min), orDash(q.Max), orDash(q.Fixed),
			c.Demand, c.Allocated, c.Used})
	}
	writeTable(w, []string{"CONSUMER", "WEIGHT", "PRIORITY", "MIN", "MAX", "FIXED", "DEMAND", "ALLOCATED", "USED"}, rows)
	if !history {
		return
	}
	fmt.Fprintln(w)
	rows = nil
	for _, h := range st.History {
		var by []string
		for k, v := range h.UsedByConsumer {
			by = append(by, k+"="+v)
		}
		sort.Strings(by)
		rows = append(rows, []string{formatTime(h.Start), formatTime(h.End), h.Capacity, h.Used, orDash(strings.Join(by, ","))})
	}
	writeTable(w, []string{"PERIOD START", "PERIOD END", "CAPACITY", "USED", "BY CONSUMER"}, rows)
}

func newQuotaCreateCommand(cf *clientFlags) *cobra.Command {
	var (
		pool        tollgatev1.QuotaPool
		period      = enumFlag[tollgatev1.Period]{value: tollgatev1.Period_PERIOD_NONE}
		customP     durationText
		enforcement = enumFlag[tollgatev1.Enforcement]{value: tollgatev1.Enforcement_ENFORCEMENT_HARD}
		strategy    enumFlag[tollgatev1.QuotaStrategy]
		requestID   string
	)
	cmd := &cobra.Command{
		Use:   "create ID --resource NAME --capacity AMOUNT --strategy S",
		Short: "Create a quota pool",
		Args:  argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "resource", "capacity", "strategy"); err != nil {
				return err
			}
			pool.Id, pool.Period, pool.CustomPeriod, pool.Enforcement, pool.Strategy = args[0], period.value, string(customP), enforcement.value, strategy.value
			resp, err := unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.CreatePool,
				&tollgatev1.CreatePoolRequest{Tenant: cf.tenant, Pool: &pool, RequestId: requestID})
			if err != nil {
				return err
			}
			return printReply(cmd, cf, resp, func(w io.Writer) { writePool(w, resp.State, false) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&pool.Resource, "resource", "", `what the pool holds, e.g. "gpu-hours" (required)`)
	fl.StringVar(&pool.Capacity, "capacity", "", "capacity per period, a decimal (required)")
	enumVar(fl, &period, "period", "how often the pool renews")
	fl.Var(&customP, "custom-period", "with --period custom: its length")
	fl.StringVar(&pool.Timezone, "timezone", "", `IANA timezone periods renew in (default "UTC")`)
	enumVar(fl, &enforcement, "enforcement", "hard denies use past an allocation; soft allows it and flags it")
	enumVar(fl, &strategy, "strategy", "how the capacity is shared (required)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newQuotaGetCommand(cf *clientFlags, use, short string) *cobra.Command {
	cmd := &cobra.Command{Use: use + " POOL", Short: short, Args: argsExactly("POOL")}
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.GetPool, &tollgatev1.GetPoolRequest{Tenant: cf.tenant,
			PoolId: args[0], Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		return printReply(cmd, cf, resp, func(w io.Writer) { writePool(w, resp.State, use == "usage") })
	}
	return cmd
}

func newQuotaAllocateCommand(cf *clientFlags) *cobra.Command {
	var (
		c         tollgatev1.QuotaConsumer
		remove    bool
		requestID string
	)
	cmd := &cobra.Command{
		Use:   "allocate POOL CONSUMER [--weight N] [--priority N] [--min A] [--max A] [--fixed A] [--remove]",
		Short: "Add, change or remove a consumer of a pool",
		Args:  argsExactly("POOL", "CONSUMER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c.Id = args[1]
			var st *tollgatev1.QuotaPoolState
			var msg proto.Message
			if remove {
				resp, err := unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.DeleteConsumer,
					&tollgatev1.DeleteConsumerRequest{Tenant: cf.tenant, PoolId: args[0], ConsumerId: args[1], RequestId: requestID})
				if err != nil {
					return err
				}
				st, msg = resp.State, resp
			} else {
				resp, err := unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.SetConsumer,
					&tollgatev1.SetConsumerRequest{Tenant: cf.tenant, PoolId: args[0], Consumer: &c, RequestId: requestID})
				if err != nil {
					return err
				}
				st, msg = resp.State, resp
			}
			return printReply(cmd, cf, msg, func(w io.Writer) { writePool(w, st, false) })
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&c.Weight, "weight", 1, "share weight (1-1000000)")
	fl.Int32Var(&c.Priority, "priority", 0, "priority (higher first, with --strategy priority)")
	fl.StringVar(&c.Min, "min", "", "guaranteed minimum")
	fl.StringVar(&c.Max, "max", "", "cap")
	fl.StringVar(&c.Fixed, "fixed", "", "amount (with --strategy fixed)")
	fl.BoolVar(&remove, "remove", false, "remove the consumer")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newQuotaDemandCommand(cf *clientFlags) *cobra.Command {
	var demand, requestID string
	cmd := &cobra.Command{
		Use:   "demand POOL CONSUMER --demand AMOUNT",
		Short: "Report what a consumer needs this period",
		Args:  argsExactly("POOL", "CONSUMER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "demand"); err != nil {
				return err
			}
			resp, err := unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.SetDemand, &tollgatev1.SetDemandRequest{
				Tenant: cf.tenant, PoolId: args[0], ConsumerId: args[1], Demand: demand, RequestId: requestID})
			if err != nil {
				return err
			}
			return printReply(cmd, cf, resp, func(w io.Writer) { writePool(w, resp.State, false) })
		},
	}
	cmd.Flags().StringVar(&demand, "demand", "", "the demand, a decimal (required)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newQuotaConsumeCommand(cf *clientFlags) *cobra.Command {
	var amount, requestID string
	cmd := &cobra.Command{
		Use:   "consume POOL CONSUMER --amount AMOUNT",
		Short: "Spend against a consumer's allocation",
		Args:  argsExactly("POOL", "CONSUMER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "amount"); err != nil {
				return err
			}
			resp, err := unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.Consume, &tollgatev1.QuotaServiceConsumeRequest{
				Tenant: cf.tenant, PoolId: args[0], ConsumerId: args[1], Amount: amount, RequestId: requestID})
			if err != nil {
				return err
			}
			return printDecision(cmd, cf, resp, resp.Allowed, field{"reason", formatReason(resp.Reason)}, field{"would deny", formatBool(resp.WouldDeny)},
				field{"allocated", resp.Allocated}, field{"used", resp.Used}, field{"log index", formatLogIndex(resp.LogIndex)},
				field{"receipt", formatReceiptRef(resp.ReceiptRef)})
		},
	}
	cmd.Flags().StringVar(&amount, "amount", "", "the amount, a decimal (required)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newQuotaRenewCommand(cf *clientFlags) *cobra.Command {
	var requestID string
	cmd := &cobra.Command{
		Use:   "renew POOL",
		Short: "Close the current period now (usage goes to the history)",
		Args:  argsExactly("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.Renew, &tollgatev1.RenewRequest{
				Tenant: cf.tenant, PoolId: args[0], RequestId: requestID})
			if err != nil {
				return err
			}
			return printReply(cmd, cf, resp, func(w io.Writer) { writePool(w, resp.State, true) })
		},
	}
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newQuotaListCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List the tenant's quota pools in id order", Args: cobra.NoArgs}
	rf := addReadFlags(cmd)
	pf := addPageFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		got, err := fetchPages(pf, func(token string) (*tollgatev1.ListPoolsResponse, error) {
			return unary(cmd, cf, quotaService, tollgatev1connect.QuotaServiceClient.ListPools, &tollgatev1.ListPoolsRequest{Tenant: cf.tenant,
				PageSize: pf.size, PageToken: token, Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		}, func(all, page *tollgatev1.ListPoolsResponse) {
			all.Pools = append(all.Pools, page.Pools...)
			all.NextPageToken = page.NextPageToken
		})
		if err != nil {
			return err
		}
		resp := got.all
		if err := printReply(cmd, cf, resp, func(w io.Writer) {
			var rows [][]string
			for _, st := range resp.Pools {
				rows = append(rows, []string{st.Pool.Id, st.Pool.Resource, st.Pool.Capacity, enumWord(st.Pool.Strategy), enumWord(st.Pool.Period),
					formatUint(uint64(len(st.Consumers)))})
			}
			writeTable(w, []string{"ID", "RESOURCE", "CAPACITY", "STRATEGY", "PERIOD", "CONSUMERS"}, rows)
		}); err != nil {
			return err
		}
		return got.finish(cmd, cf, resp.NextPageToken)
	}
	return cmd
}
