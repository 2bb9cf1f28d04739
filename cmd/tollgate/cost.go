package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

func init() { clientCommands = append(clientCommands, newCostCommand, newFxCommand, newAlertCommand) }

func costService(c *client.Client) tollgatev1connect.CostServiceClient { return c.Costs }

func newCostCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("cost",
		"Record costs and report where money went",
		`Cost records are costs that already happened: recording never denies. A
record charges every budget whose selector (budget create --select) matches
its labels, converted into the budget's currency with the cluster's exchange
rates (tollgate fx), and is summed into hourly rollups that reports read.`,
		`  tollgate cost record --tenant acme --resource llm-tokens --amount 0.0125 --currency USD --label team=ml --label model=gpt-4o
  tollgate cost report --tenant acme --from 2026-11-01 --group-by team,model --bucket day --currency USD
  tollgate cost report --tenant acme --from 2026-11-01 --to 2026-12-01 --bucket week --currency EUR --output csv`))
	cf := addClientFlags(cmd, true)
	cmd.AddCommand(newCostRecordCommand(cf), newCostListCommand(cf), newCostGetCommand(cf), newCostReportCommand(cf), newCostAnomalyCommand(cf))
	return cmd
}

// labelList is a repeatable KEY=VALUE flag.
type labelList map[string]string

func (l *labelList) String() string {
	keys := make([]string, 0, len(*l))
	for k := range *l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + (*l)[k]
	}
	return strings.Join(parts, ",")
}

func (l *labelList) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	if *l == nil {
		*l = labelList{}
	}
	if _, dup := (*l)[k]; dup {
		return fmt.Errorf("label %q given twice", k)
	}
	(*l)[k] = v
	return nil
}

func (l *labelList) Type() string { return "KEY=VALUE" }

// selectorFlag is a repeatable KEY=V1|V2 flag: the key must have one of the
// values.
type selectorFlag struct{ sel *tollgatev1.LabelSelector }

func (f *selectorFlag) String() string {
	if f.sel == nil {
		return ""
	}
	parts := make([]string, len(f.sel.Match))
	for i, r := range f.sel.Match {
		parts[i] = r.Key + "=" + strings.Join(r.Values, "|")
	}
	return strings.Join(parts, ",")
}

func (f *selectorFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return fmt.Errorf("%q: want KEY=VALUE or KEY=V1|V2 (values separated by |)", s)
	}
	if f.sel == nil {
		f.sel = &tollgatev1.LabelSelector{}
	}
	for _, r := range f.sel.Match {
		if r.Key == k {
			return fmt.Errorf("key %q given twice; list its values as %s=V1|V2", k, k)
		}
	}
	f.sel.Match = append(f.sel.Match, &tollgatev1.LabelRequirement{Key: k, Values: strings.Split(v, "|")})
	return nil
}

func (f *selectorFlag) Type() string { return "KEY=V1|V2" }

func formatSelector(s *tollgatev1.LabelSelector) string {
	if s == nil {
		return ""
	}
	return (&selectorFlag{sel: s}).String()
}

// timeFlag takes RFC 3339 ("2026-11-27T10:00:00Z") or a date ("2026-11-27",
// midnight in the command's --timezone, UTC by default).
type timeFlag struct {
	text string
}

func (t *timeFlag) String() string     { return t.text }
func (t *timeFlag) Set(s string) error { t.text = s; return nil }
func (t *timeFlag) Type() string       { return "TIME" }

func (t *timeFlag) parse(name, zone string) (*timestamppb.Timestamp, error) {
	if ts, err := time.Parse(time.RFC3339Nano, t.text); err == nil {
		return timestamppb.New(ts), nil
	}
	loc := time.UTC
	if zone != "" {
		var err error
		if loc, err = time.LoadLocation(zone); err != nil {
			return nil, fmt.Errorf("--timezone %q: %v", zone, err)
		}
	}
	ts, err := time.ParseInLocation("2006-01-02", t.text, loc)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: want RFC 3339 (2026-11-27T10:00:00Z) or a date (2026-11-27)", name, t.text)
	}
	return timestamppb.New(ts), nil
}

func chargeRows(charges []*tollgatev1.CostCharge) [][]string {
	var rows [][]string
	for _, c := range charges {
		rows = append(rows, []string{c.BudgetId, c.Amount + " " + c.Currency, orDash(c.Rate), c.Spent, c.Remaining, orDash(formatPercents(c.ThresholdsCrossed))})
	}
	return rows
}

func newCostRecordCommand(cf *clientFlags) *cobra.Command {
	var (
		rec       tollgatev1.CostRecord
		labels    labelList
		at        timeFlag
		requestID string
	)
	cmd := &cobra.Command{
		Use:   "record --resource NAME --amount AMOUNT --currency CODE [--label KEY=VALUE]...",
		Short: "Record a cost that already happened",
		Long: `Record one cost. It is never denied; it charges every budget of the tenant
whose selector matches its labels (and their parents), converted into the
budget's currency, and prints each charge with the rate used. --at defaults
to now; it may be at most 5 minutes ahead of the cluster and 400 days back.`,
		Example: `  tollgate cost record --tenant acme --resource llm-tokens --service openai --amount 0.0125 --currency USD --label team=ml --label model=gpt-4o
  tollgate cost record --tenant acme --resource gpu-hours --amount 12.40 --currency EUR --at 2026-11-27T09:00:00Z --request-id job-881`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "resource", "amount", "currency"); err != nil {
				return err
			}
			rec.Labels = labels
			rec.OccurredAt = timestamppb.Now()
			if at.text != "" {
				ts, err := at.parse("at", "")
				if err != nil {
					return usageErrorf(cmd, "%v", err)
				}
				rec.OccurredAt = ts
			}
			resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.RecordCost,
				&tollgatev1.RecordCostRequest{Tenant: cf.tenant, Record: &rec, RequestId: requestID})
			if err != nil {
				return err
			}
			return printReply(cmd, cf, resp, func(w io.Writer) {
				writeFields(w, []field{{"record", resp.RecordId}, {"log index", formatLogIndex(resp.LogIndex)},
					{"receipt", formatReceiptRef(resp.ReceiptRef)}})
				if len(resp.Charges) == 0 {
					fmt.Fprintln(w, "charged\tno budget (no selector matches)")
					return
				}
				fmt.Fprintln(w)
				writeTable(w, []string{"BUDGET", "CHARGED", "RATE", "SPENT", "REMAINING", "CROSSED"}, chargeRows(resp.Charges))
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&rec.Resource, "resource", "", `what was used, e.g. "llm-tokens" (required)`)
	fl.StringVar(&rec.Service, "service", "", `who provided it, e.g. "openai"`)
	fl.StringVar(&rec.Amount, "amount", "", `the cost, a decimal string such as "0.0125" (required)`)
	fl.StringVar(&rec.Currency, "currency", "", `ISO 4217 code such as "USD" (required)`)
	fl.Var(&labels, "label", "a label KEY=VALUE (repeat for more; at most 16)")
	fl.Var(&at, "at", "when the cost happened, RFC 3339 (default: now)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newCostReportCommand(cf *clientFlags) *cobra.Command {
	var (
		from, to timeFlag
		groupBy  []string
		bucket   = enumFlag[tollgatev1.Bucket]{value: tollgatev1.Bucket_BUCKET_DAY}
		timezone string
		currency string
		filter   selectorFlag
		plotPath string
	)
	cmd := &cobra.Command{
		Use:   "report --from TIME --currency CODE [--to TIME] [--group-by KEYS] [--bucket B]",
		Short: "Sum costs by labels and time buckets in one currency",
		Long: `Sum the tenant's costs in [--from, --to) by --bucket (hour, day, week from
Monday, month, or all) in --timezone, grouped by the --group-by label keys
("resource" and "service" name the records' fields), totalled in --currency
with the cluster's exchange rates. --output csv writes bucket, group keys,
amount and count as CSV; json the API's reply.`,
		Example: `  tollgate cost report --tenant acme --from 2026-11-01 --group-by team,model --bucket day --currency USD
  tollgate cost report --tenant acme --from 2026-11-01 --to 2026-12-01 --bucket all --group-by resource --currency EUR --filter team=ml|data
  tollgate cost report --tenant acme --from 2026-11-20T00:00:00Z --bucket hour --currency USD --output csv > costs.csv
  tollgate cost report --tenant acme --from 2026-11-01 --group-by team --bucket day --currency USD --plot spend.png`,
		Args: cobra.NoArgs,
	}
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "from", "currency"); err != nil {
			return err
		}
		fromTS, err := from.parse("from", timezone)
		if err != nil {
			return usageErrorf(cmd, "%v", err)
		}
		toTS := timestamppb.Now()
		if to.text != "" {
			if toTS, err = to.parse("to", timezone); err != nil {
				return usageErrorf(cmd, "%v", err)
			}
		}
		resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.Report,
			&tollgatev1.ReportRequest{Tenant: cf.tenant, From: fromTS, To: toTS, GroupBy: groupBy, Bucket: bucket.value,
				Timezone: timezone, Currency: currency, Filter: filter.sel,
				Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		loc := time.UTC
		if timezone != "" {
			loc, _ = time.LoadLocation(timezone) // the server accepted it
		}
		if plotPath != "" {
			if err := plotReport(plotPath, resp, groupBy, loc); err != nil {
				return &exitError{code: exitFailure, msg: "error: " + err.Error()}
			}
		}
		header := append(append([]string{"BUCKET"}, upper(groupBy)...), "AMOUNT "+currency, "RECORDS")
		var rows [][]string
		for _, r := range resp.Rows {
			row := []string{r.BucketStart.AsTime().In(loc).Format(time.RFC3339)}
			for _, g := range r.Group {
				row = append(row, orDash(g))
			}
			rows = append(rows, append(row, r.Amount, formatUint(r.Count)))
		}
		if cf.output == outputCSV {
			w := csv.NewWriter(cmd.OutOrStdout())
			hdr := append(append([]string{"bucket_start"}, groupBy...), "amount", "currency", "count")
			w.Write(hdr)
			for _, r := range resp.Rows {
				rec := append([]string{r.BucketStart.AsTime().In(loc).Format(time.RFC3339)}, r.Group...)
				w.Write(append(rec, r.Amount, currency, formatUint(r.Count)))
			}
			w.Flush()
			return w.Error()
		}
		return printReply(cmd, cf, resp, func(w io.Writer) {
			writeTable(w, header, rows)
			if len(rows) == 0 {
				fmt.Fprintln(w, "(no costs in the range)")
			}
		})
	}
	fl := cmd.Flags()
	fl.Var(&from, "from", "start of the range (inclusive): RFC 3339 or a date in --timezone (required)")
	fl.Var(&to, "to", "end of the range (exclusive): RFC 3339 or a date in --timezone (default: now)")
	fl.StringSliceVar(&groupBy, "group-by", nil, "label keys to group by, comma separated (resource and service name the records' fields)")
	enumVar(fl, &bucket, "bucket", "time bucket")
	fl.StringVar(&timezone, "timezone", "", `IANA timezone of the buckets and of date-only --from/--to (default "UTC")`)
	fl.StringVar(&currency, "currency", "", "currency of the totals (required)")
	fl.Var(&filter, "filter", "only records whose label KEY has one of the values (repeat for more keys)")
	fl.StringVar(&plotPath, "plot", "", "also draw spend over time per group into this PNG file (the 10 largest groups; the rest as other)")
	return cmd
}

func upper(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.ToUpper(k)
	}
	return out
}

func newFxCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("fx",
		"Set and show the cluster's exchange rates",
		`The exchange-rate table is cluster-wide and replicated. A rate FROM/TO=RATE
says one unit of FROM is worth RATE units of TO (a positive decimal, at most
12 fractional digits); only that direction is used. Cost records are
converted into a budget's currency with it, and reports into theirs.`,
		`  tollgate fx set EUR/USD=1.0837 GBP/USD=1.2671
  tollgate fx set --replace-all EUR/USD=1.09
  tollgate fx list`))
	cf := addClientFlags(cmd, false)
	cmd.AddCommand(newFxSetCommand(cf), newFxListCommand(cf))
	return cmd
}

func rateRows(rates []*tollgatev1.ExchangeRate) [][]string {
	var rows [][]string
	for _, r := range rates {
		rows = append(rows, []string{r.From + "/" + r.To, r.Rate, formatTime(r.SetAt), formatLogIndex(r.LogIndex)})
	}
	return rows
}

func newFxSetCommand(cf *clientFlags) *cobra.Command {
	var replaceAll bool
	cmd := &cobra.Command{
		Use:   "set FROM/TO=RATE...",
		Short: "Set exchange rates",
		Long: `Set one or more exchange rates (others stay unless --replace-all). Prints
the whole table after the change.`,
		Example: `  tollgate fx set EUR/USD=1.0837 JPY/USD=0.0067
  tollgate fx set --replace-all EUR/USD=1.09`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &tollgatev1.SetExchangeRatesRequest{ReplaceAll: replaceAll}
			for _, a := range args {
				pair, rate, ok := strings.Cut(a, "=")
				from, to, ok2 := strings.Cut(pair, "/")
				if !ok || !ok2 || from == "" || to == "" || rate == "" {
					return usageErrorf(cmd, "%q: want FROM/TO=RATE, e.g. EUR/USD=1.0837", a)
				}
				req.Rates = append(req.Rates, &tollgatev1.ExchangeRate{From: from, To: to, Rate: rate})
			}
			resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.SetExchangeRates, req)
			if err != nil {
				return err
			}
			return printReply(cmd, cf, resp, func(w io.Writer) {
				writeTable(w, []string{"PAIR", "RATE", "SET AT", "LOG INDEX"}, rateRows(resp.Rates))
			})
		},
	}
	cmd.Flags().BoolVar(&replaceAll, "replace-all", false, "drop every rate not given")
	return cmd
}

func newFxListCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "Show the exchange-rate table",
		Example: `  tollgate fx list --output json`,
		Args:    cobra.NoArgs,
	}
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.GetExchangeRates,
			&tollgatev1.GetExchangeRatesRequest{Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		return printReply(cmd, cf, resp, func(w io.Writer) {
			writeTable(w, []string{"PAIR", "RATE", "SET AT", "LOG INDEX"}, rateRows(resp.Rates))
			if len(resp.Rates) == 0 {
				fmt.Fprintln(w, "(no rates)")
			}
		})
	}
	return cmd
}

func newCostAnomalyCommand(cf *clientFlags) *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("anomaly",
		"Set, list and delete cost anomaly detectors",
		`A detector compares each closed hour or (UTC) day of a group's spend with
the median of the group's previous --window buckets; spend above the median
by --threshold robust deviations (1.4826 x the median absolute deviation, at
least a tenth of the median) and at least --min-amount raises one
COST_ANOMALY alert (tollgate alert list).`,
		`  tollgate cost anomaly set llm-spikes --tenant acme --group-by team,model --bucket hour --window 48 --threshold 5 --min-amount 10 --currency USD
  tollgate cost anomaly list --tenant acme`))
	cmd.AddCommand(newCostAnomalySetCommand(cf), newCostAnomalyListCommand(cf), newCostAnomalyDeleteCommand(cf))
	return cmd
}

func detectorRows(ds []*tollgatev1.AnomalyDetector) [][]string {
	var rows [][]string
	for _, d := range ds {
		rows = append(rows, []string{d.Id, orDash(strings.Join(d.GroupBy, ",")), enumWord(d.Bucket), formatUint(uint64(d.Window)),
			d.Threshold, d.MinAmount + " " + d.Currency})
	}
	return rows
}

var detectorHeader = []string{"ID", "GROUP BY", "BUCKET", "WINDOW", "THRESHOLD", "MIN AMOUNT"}

func newCostAnomalySetCommand(cf *clientFlags) *cobra.Command {
	var (
		d         tollgatev1.AnomalyDetector
		bucket    = enumFlag[tollgatev1.Bucket]{value: tollgatev1.Bucket_BUCKET_HOUR}
		requestID string
	)
	cmd := &cobra.Command{
		Use:   "set ID --currency CODE [--group-by KEYS] [--bucket hour|day] [--window N] [--threshold X] [--min-amount A]",
		Short: "Create or replace a cost anomaly detector",
		Args:  argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "currency"); err != nil {
				return err
			}
			d.Id, d.Bucket = args[0], bucket.value
			resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.SetAnomalyDetector,
				&tollgatev1.SetAnomalyDetectorRequest{Tenant: cf.tenant, Detector: &d, RequestId: requestID})
			if err != nil {
				return err
			}
			return printReply(cmd, cf, resp, func(w io.Writer) {
				writeTable(w, detectorHeader, detectorRows([]*tollgatev1.AnomalyDetector{resp.Detector}))
			})
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&d.GroupBy, "group-by", nil, "label keys to judge separately, comma separated (default: the tenant's total)")
	enumVar(fl, &bucket, "bucket", "hour or day (UTC)")
	fl.Uint32Var(&d.Window, "window", 24, "buckets in the baseline (3-336)")
	fl.StringVar(&d.Threshold, "threshold", "5", "robust deviations above the median that alert (1-1000)")
	fl.StringVar(&d.MinAmount, "min-amount", "0", "buckets with less spend never alert")
	fl.StringVar(&d.Currency, "currency", "", "currency spend is compared in (required)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newCostAnomalyListCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List the tenant's anomaly detectors", Args: cobra.NoArgs}
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.ListAnomalyDetectors,
			&tollgatev1.ListAnomalyDetectorsRequest{Tenant: cf.tenant, Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		return printReply(cmd, cf, resp, func(w io.Writer) { writeTable(w, detectorHeader, detectorRows(resp.Detectors)) })
	}
	return cmd
}

func newCostAnomalyDeleteCommand(cf *clientFlags) *cobra.Command {
	var requestID string
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an anomaly detector (its alerts stay)",
		Args:  argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.DeleteAnomalyDetector,
				&tollgatev1.DeleteAnomalyDetectorRequest{Tenant: cf.tenant, DetectorId: args[0], RequestId: requestID})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, field{"deleted", args[0]}, field{"log index", formatLogIndex(resp.LogIndex)},
				field{"receipt", formatReceiptRef(resp.ReceiptRef)})
		},
	}
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newAlertCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("alert",
		"List alerts the cluster raised",
		`Alerts are raised inside the replicated state machine from log time (cost
anomalies today), so every node lists the same alerts in the same order.`,
		`  tollgate alert list --tenant acme
  tollgate alert list --tenant acme --kind cost-anomaly --output json`))
	cf := addClientFlags(cmd, true)
	cmd.AddCommand(newAlertListCommand(cf), newAlertMoveCommand(cf, "ack"), newAlertMoveCommand(cf, "resolve"), newAlertWatchCommand(cf))
	return cmd
}

func alertService(c *client.Client) tollgatev1connect.AlertServiceClient { return c.Alerts }

func alertRow(a *tollgatev1.Alert) []string {
	what := a.Observed
	if a.Currency != "" {
		what += " " + a.Currency
	}
	if a.Percent != 0 {
		what += fmt.Sprintf(" (%d%%)", a.Percent)
	}
	return []string{a.Id, enumWord(a.Kind), enumWord(a.State), a.ObjectId, orDash(strings.Join(a.Group, ",")),
		formatTime(a.BucketStart), what, orDash(a.Baseline), orDash(a.Score)}
}

var alertHeader = []string{"ID", "KIND", "STATE", "BY", "GROUP", "BUCKET", "OBSERVED", "BASELINE", "SCORE"}

func newAlertMoveCommand(cf *clientFlags, verb string) *cobra.Command {
	var by, requestID string
	short := "Acknowledge an open alert"
	if verb == "resolve" {
		short = "Resolve an open or acknowledged alert"
	}
	cmd := &cobra.Command{
		Use:   verb + " ALERT_ID --by WHO",
		Short: short,
		Args:  argsExactly("ALERT_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "by"); err != nil {
				return err
			}
			var a *tollgatev1.Alert
			var msg proto.Message
			if verb == "ack" {
				resp, err := unary(cmd, cf, alertService, tollgatev1connect.AlertServiceClient.AckAlert,
					&tollgatev1.AckAlertRequest{Tenant: cf.tenant, AlertId: args[0], By: by, RequestId: requestID})
				if err != nil {
					return err
				}
				a, msg = resp.Alert, resp
			} else {
				resp, err := unary(cmd, cf, alertService, tollgatev1connect.AlertServiceClient.ResolveAlert,
					&tollgatev1.ResolveAlertRequest{Tenant: cf.tenant, AlertId: args[0], By: by, RequestId: requestID})
				if err != nil {
					return err
				}
				a, msg = resp.Alert, resp
			}
			return printFields(cmd, cf, msg, field{"alert", a.Id}, field{"state", enumWord(a.State)}, field{"acked by", a.AckedBy},
				field{"acked at", formatTime(a.AckedAt)}, field{"resolved by", a.ResolvedBy}, field{"resolved at", formatTime(a.ResolvedAt)})
		},
	}
	cmd.Flags().StringVar(&by, "by", "", "who (required)")
	addRequestIDFlag(cmd, &requestID)
	return cmd
}

func newAlertWatchCommand(cf *clientFlags) *cobra.Command {
	var (
		after uint64
		kind  enumFlag[tollgatev1.AlertKind]
	)
	cmd := &cobra.Command{
		Use:   "watch [--after-seq N]",
		Short: "Stream alerts as they are raised (one line each; Ctrl-C to stop)",
		Long: `Print the tenant's alerts after --after-seq, then each new one as the node
applies it. Alerts are numbered in the replicated log: to resume after a
disconnect, from any node, pass the last seq printed. --timeout bounds the
whole command (default: no bound for watch).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("timeout") {
				cf.timeout = 100 * 365 * 24 * time.Hour
			}
			_, err := call(cmd, cf, func(ctx context.Context, c *client.Client) (struct{}, error) {
				stream, err := c.Alerts.WatchAlerts(ctx, connect.NewRequest(&tollgatev1.WatchAlertsRequest{Tenant: cf.tenant, Kind: kind.value, AfterSeq: after}))
				if err != nil {
					return struct{}{}, err
				}
				out := cmd.OutOrStdout()
				for stream.Receive() {
					a := stream.Msg().Alert
					if cf.output == outputJSON {
						b, _ := protojson.Marshal(a)
						fmt.Fprintf(out, "%s\n", b)
						continue
					}
					fmt.Fprintf(out, "seq %d\t%s\n", a.Seq, strings.Join(alertRow(a), "\t"))
				}
				if err := stream.Err(); err != nil && ctx.Err() == nil {
					return struct{}{}, err
				}
				return struct{}{}, nil
			})
			return err
		},
	}
	cmd.Flags().Uint64Var(&after, "after-seq", 0, "resume after this alert seq")
	enumVar(cmd.Flags(), &kind, "kind", "only alerts of this kind")
	return cmd
}

func newAlertListCommand(cf *clientFlags) *cobra.Command {
	var kind enumFlag[tollgatev1.AlertKind]
	cmd := &cobra.Command{Use: "list", Short: "List the tenant's alerts in the order they were raised", Args: cobra.NoArgs}
	rf := addReadFlags(cmd)
	pf := addPageFlags(cmd)
	enumVar(cmd.Flags(), &kind, "kind", "only alerts of this kind")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		got, err := fetchPages(pf, func(token string) (*tollgatev1.ListAlertsResponse, error) {
			return unary(cmd, cf, func(c *client.Client) tollgatev1connect.AlertServiceClient { return c.Alerts },
				tollgatev1connect.AlertServiceClient.ListAlerts, &tollgatev1.ListAlertsRequest{Tenant: cf.tenant, Kind: kind.value,
					PageSize: pf.size, PageToken: token, Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		}, func(all, page *tollgatev1.ListAlertsResponse) {
			all.Alerts = append(all.Alerts, page.Alerts...)
			all.NextPageToken = page.NextPageToken
		})
		if err != nil {
			return err
		}
		resp := got.all
		if err := printReply(cmd, cf, resp, func(w io.Writer) {
			var rows [][]string
			for _, a := range resp.Alerts {
				rows = append(rows, alertRow(a))
			}
			writeTable(w, alertHeader, rows)
		}); err != nil {
			return err
		}
		return got.finish(cmd, cf, resp.NextPageToken)
	}
	return cmd
}

func storedCostRows(costs []*tollgatev1.StoredCost) [][]string {
	var rows [][]string
	for _, c := range costs {
		var labels []string
		for k, v := range c.Record.GetLabels() {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		var charged []string
		for _, ch := range c.Charges {
			charged = append(charged, ch.BudgetId+":"+ch.Amount+" "+ch.Currency)
		}
		rows = append(rows, []string{c.RecordId, formatTime(c.Record.GetOccurredAt()), c.Record.GetAmount() + " " + c.Record.GetCurrency(),
			c.Record.GetResource(), orDash(c.Record.GetService()), orDash(strings.Join(labels, ",")), orDash(strings.Join(charged, ","))})
	}
	return rows
}

var storedCostHeader = []string{"RECORD", "OCCURRED", "AMOUNT", "RESOURCE", "SERVICE", "LABELS", "CHARGED"}

func newCostListCommand(cf *clientFlags) *cobra.Command {
	var (
		from, to timeFlag
		filter   selectorFlag
	)
	cmd := &cobra.Command{
		Use:   "list --from TIME [--to TIME] [--filter KEY=V1|V2]...",
		Short: "List recorded costs in time order",
		Long: `List the tenant's recorded costs with occurred_at in [--from, --to), in
(occurred_at, record id) order, with what each charged. --output csv writes
one line per record.`,
		Example: `  tollgate cost list --tenant acme --from 2026-11-27 --filter team=ml --all
  tollgate cost list --tenant acme --from 2026-11-01 --to 2026-12-01 --all --output csv > november.csv`,
		Args: cobra.NoArgs,
	}
	rf := addReadFlags(cmd)
	pf := addPageFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "from"); err != nil {
			return err
		}
		fromTS, err := from.parse("from", "")
		if err != nil {
			return usageErrorf(cmd, "%v", err)
		}
		toTS := timestamppb.Now()
		if to.text != "" {
			if toTS, err = to.parse("to", ""); err != nil {
				return usageErrorf(cmd, "%v", err)
			}
		}
		got, err := fetchPages(pf, func(token string) (*tollgatev1.ListCostsResponse, error) {
			return unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.ListCosts, &tollgatev1.ListCostsRequest{
				Tenant: cf.tenant, From: fromTS, To: toTS, Filter: filter.sel, PageSize: pf.size, PageToken: token,
				Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		}, func(all, page *tollgatev1.ListCostsResponse) {
			all.Costs = append(all.Costs, page.Costs...)
			all.NextPageToken = page.NextPageToken
		})
		if err != nil {
			return err
		}
		resp := got.all
		if cf.output == outputCSV {
			w := csv.NewWriter(cmd.OutOrStdout())
			w.Write([]string{"record_id", "occurred_at", "amount", "currency", "resource", "service", "labels", "charged"})
			for i, r := range storedCostRows(resp.Costs) {
				c := resp.Costs[i]
				w.Write([]string{r[0], r[1], c.Record.GetAmount(), c.Record.GetCurrency(), c.Record.GetResource(), c.Record.GetService(), r[5], r[6]})
			}
			w.Flush()
			if err := w.Error(); err != nil {
				return err
			}
		} else if err := printReply(cmd, cf, resp, func(w io.Writer) { writeTable(w, storedCostHeader, storedCostRows(resp.Costs)) }); err != nil {
			return err
		}
		return got.finish(cmd, cf, resp.NextPageToken)
	}
	fl := cmd.Flags()
	fl.Var(&from, "from", "start of the range (inclusive): RFC 3339 or a date (UTC) (required)")
	fl.Var(&to, "to", "end of the range (exclusive): RFC 3339 or a date (UTC) (default: now)")
	fl.Var(&filter, "filter", "only records whose label KEY (or resource/service) has one of the values (repeat for more keys)")
	return cmd
}

func newCostGetCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "get RECORD_ID",
		Short:   "Show one recorded cost and what it charged",
		Example: `  tollgate cost get c1042-0-3 --tenant acme`,
		Args:    argsExactly("RECORD_ID"),
	}
	rf := addReadFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := unary(cmd, cf, costService, tollgatev1connect.CostServiceClient.GetCost,
			&tollgatev1.GetCostRequest{Tenant: cf.tenant, RecordId: args[0], Consistency: rf.consistency.value, MaxStaleness: string(rf.maxStaleness)})
		if err != nil {
			return err
		}
		row := storedCostRows([]*tollgatev1.StoredCost{resp.Cost})[0]
		return printFields(cmd, cf, resp, field{"record", row[0]}, field{"occurred", row[1]}, field{"amount", row[2]},
			field{"resource", row[3]}, field{"service", row[4]}, field{"labels", row[5]}, field{"charged", row[6]},
			field{"recorded", formatTime(resp.Cost.RecordedAt)}, field{"receipt", formatReceiptRef(resp.Cost.ReceiptRef)})
	}
	return cmd
}
