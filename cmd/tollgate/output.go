package main

// How client commands print replies: --output table (key/value lines for one
// object, a table with a header for lists, decisions led by ALLOWED or
// DENIED) or --output json (the response message as the API's JSON).

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

// outputFormat is the --output flag.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
	// outputCSV is for tabular reports (cost report); other commands refuse it.
	outputCSV outputFormat = "csv"
)

func (o *outputFormat) String() string { return string(*o) }

func (o *outputFormat) Set(s string) error {
	switch outputFormat(s) {
	case outputTable, outputJSON, outputCSV:
		*o = outputFormat(s)
		return nil
	}
	return errors.New("want one of table, json, csv")
}

func (o *outputFormat) Type() string { return "table|json|csv" }

// jsonOptions print the API's JSON (the Connect JSON codec's field names and
// omissions), indented for people.
var jsonOptions = protojson.MarshalOptions{Multiline: true, Indent: "  "}

// field is one key/value line; a field with an empty value is not printed.
type field struct {
	key   string
	value string
}

// printReply prints msg as JSON, or as a table written by table.
func printReply(cmd *cobra.Command, cf *clientFlags, msg proto.Message, table func(w io.Writer)) error {
	out := cmd.OutOrStdout()
	if cf.output == outputCSV {
		return usageErrorf(cmd, "--output csv is for cost report and cost list; use table or json here")
	}
	if cf.output == outputJSON {
		b, err := jsonOptions.Marshal(msg)
		if err != nil {
			return &exitError{code: exitFailure, msg: fmt.Sprintf("error: encode reply: %v", err)}
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// printFields prints msg with key/value lines.
func printFields(cmd *cobra.Command, cf *clientFlags, msg proto.Message, fields ...field) error {
	return printReply(cmd, cf, msg, func(w io.Writer) { writeFields(w, fields) })
}

// printDecision prints a decision: ALLOWED or DENIED, then its fields. A
// denial is exit code 3 once printed.
func printDecision(cmd *cobra.Command, cf *clientFlags, msg proto.Message, allowed bool, fields ...field) error {
	err := printReply(cmd, cf, msg, func(w io.Writer) {
		if allowed {
			fmt.Fprintln(w, "ALLOWED")
		} else {
			fmt.Fprintln(w, "DENIED")
		}
		writeFields(w, fields)
	})
	if err != nil {
		return err
	}
	if !allowed {
		return deniedError()
	}
	return nil
}

func writeFields(w io.Writer, fields []field) {
	for _, f := range fields {
		if f.value != "" {
			fmt.Fprintf(w, "%s\t%s\n", f.key, f.value)
		}
	}
}

// writeTable writes a header and rows; columns are separated by tabs.
func writeTable(w io.Writer, header []string, rows [][]string) {
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
}

// nextPageHint tells (on stderr, so that stdout stays the table) how to
// fetch the next page.
func nextPageHint(cmd *cobra.Command, cf *clientFlags, token string) {
	if token != "" && cf.output == outputTable {
		fmt.Fprintf(cmd.ErrOrStderr(), "next page: --page-token %s\n", token)
	}
}

// Formatting of values in tables. Empty means "not set" (the line is left
// out); amounts are printed exactly as the API returns them.

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}

func formatDuration(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().String()
}

func formatUint(v uint64) string { return strconv.FormatUint(v, 10) }

func formatInt(v int64) string { return strconv.FormatInt(v, 10) }

func formatLogIndex(v uint64) string {
	if v == 0 {
		return ""
	}
	return formatUint(v)
}

func formatBool(v bool) string {
	if !v {
		return ""
	}
	return "true"
}

func formatPercents(ps []uint32) string {
	words := make([]string, len(ps))
	for i, p := range ps {
		words[i] = strconv.FormatUint(uint64(p), 10)
	}
	return strings.Join(words, ",")
}

// formatReason is a deny reason's word; empty when there is none.
func formatReason[E protoEnum](r E) string {
	if r == 0 {
		return ""
	}
	return enumWord(r)
}

// formatReadInfo says how a read was served.
func formatReadInfo(ri *tollgatev1.ReadInfo) string {
	if ri == nil {
		return ""
	}
	s := fmt.Sprintf("%s at index %d on %s", enumWord(ri.Consistency), ri.AppliedIndex, ri.NodeId)
	if d := ri.Staleness.AsDuration(); d > 0 {
		s += fmt.Sprintf(" (at most %s stale)", d)
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatReceiptRef prints a receipt reference as "INDEX/POSITION", the
// arguments of 'tollgate receipt get --index --position'.
func formatReceiptRef(ref *tollgatev1.ReceiptRef) string {
	if ref == nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", ref.LogIndex, ref.Position)
}
