package main

import (
	"fmt"
	pngpkg "image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

// cost runs `tollgate cost args... --addr A --tenant T`.
func (n *cliNode) cost(args ...string) cliResult {
	n.t.Helper()
	return runCLI(n.t, append(append([]string{"cost"}, args...), "--addr", n.addr, "--tenant", n.tenant)...)
}

func (n *cliNode) fx(args ...string) cliResult {
	n.t.Helper()
	return runCLI(n.t, append(append([]string{"fx"}, args...), "--addr", n.addr)...)
}

// testCostRecordAndReport: rates, a budget with a selector, records that
// charge it converted, a record that charges nothing, and the report as a
// table and as CSV.
func testCostRecordAndReport(t *testing.T, n *cliNode) {
	r := n.fx("set", "EUR/USD=1.0837", "GBP/USD=1.25000", "--output", "json")
	var rates tollgatev1.SetExchangeRatesResponse
	decodeCLIJSON(t, r, &rates)
	if r.code != 0 || len(rates.Rates) != 2 || rates.Rates[1].Rate != "1.25" {
		t.Fatalf("fx set: exit %d, %v", r.code, &rates)
	}
	wantCLIError(t, n.fx("set", "EUR/USD=0"), 1, "error: invalid_argument: rates[0].rate: \"0\" is zero; a rate must be positive\n", false)
	wantCLIError(t, n.fx("set", "EURUSD=1"), 2, "error: \"EURUSD=1\": want FROM/TO=RATE, e.g. EUR/USD=1.0837\n", true)

	r = n.budget("create", "ml", "--amount", "10", "--currency", "USD", "--select", "team=ml", "--select", "model=a|b", "--output", "json")
	var created tollgatev1.CreateBudgetResponse
	decodeCLIJSON(t, r, &created)
	if r.code != 0 || formatSelector(created.State.Budget.Selector) != "model=a|b,team=ml" {
		t.Fatalf("create with --select: exit %d, %v", r.code, &created)
	}

	r = n.cost("record", "--resource", "llm", "--amount", "2.5", "--currency", "EUR", "--label", "team=ml", "--label", "model=a",
		"--at", "2030-01-15T10:00:00Z", "--request-id", "c-1")
	want := fmt.Sprintf(`record     c%d-0-0
log index  %d
receipt    %d/0

BUDGET  CHARGED      RATE    SPENT    REMAINING  CROSSED
ml      2.70925 USD  1.0837  2.70925  7.29075    -
`, created.LogIndex+1, created.LogIndex+1, created.LogIndex+1)
	wantCLI(t, r, 0, want)
	// The retry with the same request id replays the same reply.
	wantCLI(t, n.cost("record", "--resource", "llm", "--amount", "2.5", "--currency", "EUR", "--label", "team=ml", "--label", "model=a",
		"--at", "2030-01-15T10:00:00Z", "--request-id", "c-1"), 0, want)

	wantCLI(t, n.cost("record", "--resource", "gpu", "--amount", "4", "--currency", "GBP", "--label", "team=data",
		"--at", "2030-01-14T23:00:00Z"), 0, fmt.Sprintf(`record     c%d-0-0
log index  %d
receipt    %d/0
charged    no budget (no selector matches)
`, created.LogIndex+3, created.LogIndex+3, created.LogIndex+3)) // the retry took an entry too

	wantCLI(t, n.cost("report", "--from", "2030-01-14", "--to", "2030-01-16", "--group-by", "team,resource", "--currency", "USD"), 0,
		`BUCKET                TEAM  RESOURCE  AMOUNT USD  RECORDS
2030-01-14T00:00:00Z  data  gpu       5.00        1
2030-01-15T00:00:00Z  ml    llm       2.70925     1
`)
	wantCLI(t, n.cost("report", "--from", "2030-01-14", "--to", "2030-01-16", "--bucket", "all", "--currency", "USD", "--output", "csv"), 0,
		"bucket_start,amount,currency,count\n2030-01-14T00:00:00Z,7.70925,USD,2\n")

	// --plot draws the same rows into a PNG beside the table.
	png := filepath.Join(t.TempDir(), "spend.png")
	r = n.cost("report", "--from", "2030-01-14", "--to", "2030-01-16", "--group-by", "team", "--bucket", "hour", "--currency", "USD", "--plot", png)
	if r.code != 0 {
		t.Fatalf("report --plot: exit %d %s", r.code, r.stderr)
	}
	f, err := os.Open(png)
	if err != nil {
		t.Fatal(err)
	}
	img, err := pngpkg.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 500 {
		t.Errorf("--plot wrote no usable PNG: %v", err)
	}

	// The records as stored, with what they charged.
	wantCLI(t, n.cost("list", "--from", "2030-01-14", "--to", "2030-01-16"), 0, fmt.Sprintf(`RECORD   OCCURRED              AMOUNT    RESOURCE  SERVICE  LABELS           CHARGED
c%d-0-0  2030-01-14T23:00:00Z  4.00 GBP  gpu       -        team=data        -
c%d-0-0  2030-01-15T10:00:00Z  2.50 EUR  llm       -        model=a,team=ml  ml:2.70925 USD
`, created.LogIndex+3, created.LogIndex+1))
	wantCLI(t, n.cost("list", "--from", "2030-01-14", "--to", "2030-01-16", "--filter", "team=ml", "--output", "csv"), 0, fmt.Sprintf(
		"record_id,occurred_at,amount,currency,resource,service,labels,charged\nc%d-0-0,2030-01-15T10:00:00Z,2.50,EUR,llm,,\"model=a,team=ml\",ml:2.70925 USD\n", created.LogIndex+1))
	r = n.cost("get", fmt.Sprintf("c%d-0-0", created.LogIndex+1))
	if r.code != 0 || !strings.Contains(r.stdout, "charged   ml:2.70925 USD\n") {
		t.Errorf("cost get: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	wantCLIError(t, n.cost("get", "c1-0-0"), 1, "error: not_found: cost record \"c1-0-0\" of tenant \"cost-record-report\": no such cost record on this node\n", false)

	// Bad input names the field.
	wantCLIError(t, n.cost("record", "--resource", "llm", "--amount", "1", "--currency", "EUR", "--label", "team=ml", "--label", "model=b",
		"--at", "2030-01-15T10:00:00Z", "--label", "x=y", "--label", "resource=z"), 1,
		"error: invalid_argument: record.labels[1].key \"resource\" is reserved (it names the record's resource)\n", false)
	wantCLIError(t, n.cost("record", "--resource", "llm", "--amount", "1", "--currency", "JPY", "--label", "team=ml", "--label", "model=b",
		"--at", "2030-01-15T10:00:00Z"), 1,
		"error: invalid_argument: record.currency: no exchange rate from JPY to USD (budget \"ml\"); set one with SetExchangeRates\n", false)
	wantCLIError(t, n.cost("record", "--resource", "llm", "--amount", "1", "--currency", "USD", "--at", "2030-01-15T11:00:00Z"), 1,
		"error: invalid_argument: record.occurred_at is 30m after the cluster's time; at most 5m\n", false)
	wantCLIError(t, n.cost("report", "--from", "2030-01-14", "--to", "2030-01-16", "--currency", "USD", "--output", "csv", "--group-by", "Team"), 1,
		"error: invalid_argument: group_by[0] \"Team\" has character 'T'; allowed are a-z 0-9 _ . - /\n", false)
	wantCLIError(t, n.budget("get", "ml", "--output", "csv"), 2, "error: --output csv is for cost report and cost list; use table or json here\n", true)

	// Anomaly detectors and alerts (the frozen clock closes no bucket, so
	// there are none to list).
	wantCLI(t, n.cost("anomaly", "set", "spikes", "--group-by", "team", "--window", "48", "--threshold", "4.5", "--min-amount", "10", "--currency", "USD"), 0,
		`ID      GROUP BY  BUCKET  WINDOW  THRESHOLD  MIN AMOUNT
spikes  team      hour    48      4.5        10.00 USD
`)
	wantCLI(t, n.cost("anomaly", "list"), 0, `ID      GROUP BY  BUCKET  WINDOW  THRESHOLD  MIN AMOUNT
spikes  team      hour    48      4.5        10.00 USD
`)
	wantCLIError(t, n.cost("anomaly", "set", "bad", "--threshold", "0.5", "--currency", "USD"), 1,
		"error: invalid_argument: detector.threshold must be between 1 and 1000\n", false)
	wantCLI(t, runCLI(t, "alert", "list", "--addr", n.addr, "--tenant", n.tenant), 0, "ID  KIND  STATE  BY  GROUP  BUCKET  OBSERVED  BASELINE  SCORE\n")
	r = n.cost("anomaly", "delete", "spikes")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "deleted    spikes\n") {
		t.Errorf("delete: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
