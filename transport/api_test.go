package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/tollgatetest"
)

// postJSON sends body to a procedure with the Connect JSON protocol, exactly
// like curl would, and decodes the reply.
func postJSON(t *testing.T, addr, procedure, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/tollgate.v1."+procedure, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: reply %q is not JSON: %v", procedure, raw, err)
	}
	return resp.StatusCode, out
}

func mustOK(t *testing.T, addr, procedure, body string) map[string]any {
	t.Helper()
	code, out := postJSON(t, addr, procedure, body)
	if code != http.StatusOK {
		t.Fatalf("POST %s %s: HTTP %d %v", procedure, body, code, out)
	}
	return out
}

// TestJSONContract sends the requests of the API contract verbatim.
func TestJSONContract(t *testing.T) {
	addr := tollgatetest.StartServer(t, tollgatetest.Options{}).APIAddr()

	created := mustOK(t, addr, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"llm","amount":"1000.00",
        "currency":"USD","period":"PERIOD_MONTH","timezone":"Europe/Berlin",
        "enforcement":"ENFORCEMENT_HARD","thresholdsPercent":[50,80,100]}}`)
	state := created["state"].(map[string]any)
	if got := state["budget"].(map[string]any)["amount"]; got != "1000.00" {
		t.Errorf("created amount = %v, want 1000.00", got)
	}
	mustOK(t, addr, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"llm-team-a","amount":"100.00","currency":"USD","period":"PERIOD_MONTH","timezone":"Europe/Berlin","parentId":"llm"}}`)

	consumed := mustOK(t, addr, "BudgetService/Consume", `{"tenant":"acme","budgetId":"llm","amount":"0.0125","requestId":"r-1"}`)
	if consumed["allowed"] != true || consumed["remaining"] != "999.9875" {
		t.Errorf("consume = %v, want allowed and remaining 999.9875", consumed)
	}
	got := mustOK(t, addr, "BudgetService/GetBudget", `{"tenant":"acme","budgetId":"llm","consistency":"CONSISTENCY_LINEARIZABLE"}`)
	if got["spent"] != "0.0125" || got["remaining"] != "999.9875" || got["budget"].(map[string]any)["id"] != "llm" {
		t.Errorf("get = %v", got)
	}
	denied := mustOK(t, addr, "BudgetService/Consume", `{"tenant":"acme","budgetId":"llm","amount":"5000","requestId":"r-big"}`)
	if denied["allowed"] != nil || denied["reason"] != "DENY_REASON_BUDGET_EXCEEDED" {
		t.Errorf("oversized consume = %v, want allowed absent and reason BUDGET_EXCEEDED", denied)
	}

	reserved := mustOK(t, addr, "BudgetService/Reserve", `{"tenant":"acme","budgetId":"llm","amount":"2.00","ttl":"30s","requestId":"r-2"}`)
	holdID, _ := reserved["holdId"].(string)
	if reserved["allowed"] != true || holdID == "" || reserved["remaining"] != "997.9875" {
		t.Fatalf("reserve = %v", reserved)
	}
	committed := mustOK(t, addr, "BudgetService/Commit", fmt.Sprintf(`{"tenant":"acme","holdId":%q,"amount":"1.50","requestId":"r-3"}`, holdID))
	if committed["allowed"] != true || committed["remaining"] != "998.4875" {
		t.Errorf("commit = %v", committed)
	}
	reserved2 := mustOK(t, addr, "BudgetService/Reserve", `{"tenant":"acme","budgetId":"llm","amount":"1.00","ttl":"30s","requestId":"r-4"}`)
	released := mustOK(t, addr, "BudgetService/Release", fmt.Sprintf(`{"tenant":"acme","holdId":%q,"requestId":"r-5"}`, reserved2["holdId"]))
	if released["released"] != "1.00" || released["remaining"] != "998.4875" {
		t.Errorf("release = %v", released)
	}

	mustOK(t, addr, "RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"per-user","algorithm":
        "ALGORITHM_TOKEN_BUCKET","limit":"10","window":"1s","burst":"10"}}`)
	check := mustOK(t, addr, "RateLimitService/Check", `{"tenant":"acme","policyId":"per-user","key":"u-1","cost":"1"}`)
	want := map[string]any{"allowed": true, "remaining": "9", "limit": "10", "resetAfter": "0.100s", "retryAfter": "0s"}
	for k, v := range want {
		if check[k] != v {
			t.Errorf("check[%s] = %v, want %v (reply %v)", k, check[k], v, check)
		}
	}
	batch := mustOK(t, addr, "RateLimitService/CheckBatch", `{"tenant":"acme","items":[{"policyId":"per-user","key":"u-2","cost":"1"},{"policyId":"per-user","key":"u-2","cost":"9"},{"policyId":"per-user","key":"u-2","cost":"1"}]}`)
	results := batch["results"].([]any)
	if len(results) != 3 || results[0].(map[string]any)["allowed"] != true || results[1].(map[string]any)["allowed"] != true ||
		results[2].(map[string]any)["allowed"] != nil {
		t.Errorf("check batch = %v, want allowed, allowed, denied", batch)
	}
	cb := mustOK(t, addr, "BudgetService/ConsumeBatch", `{"tenant":"acme","items":[{"budgetId":"llm","amount":"1"},{"budgetId":"llm-team-a","amount":"2"}]}`)
	if cb["allAllowed"] != true || len(cb["results"].([]any)) != 2 {
		t.Errorf("consume batch = %v", cb)
	}

	status := mustOK(t, addr, "ClusterService/Status", `{}`)
	if status["leaderId"] != "test-node" || len(status["members"].([]any)) != 1 || status["appliedIndex"] == nil {
		t.Errorf("status = %v", status)
	}
}

// TestBadInput: every malformed request is InvalidArgument naming the field,
// never a panic or an Internal error.
func TestBadInput(t *testing.T) {
	addr := tollgatetest.StartServer(t, tollgatetest.Options{}).APIAddr()
	mustOK(t, addr, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"b","amount":"10","currency":"USD"}}`)
	mustOK(t, addr, "RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"p","algorithm":"ALGORITHM_GCRA","limit":"10","window":"1s"}}`)
	cases := []struct {
		name, procedure, body, field string
	}{
		{"negative amount", "BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"-1"}`, "amount"},
		{"non-decimal amount", "BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"1e3"}`, "amount"},
		{"seven decimals", "BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"0.0000001"}`, "amount"},
		{"empty amount", "BudgetService/Consume", `{"tenant":"acme","budgetId":"b"}`, "amount"},
		{"zero amount", "BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"0"}`, "amount"},
		{"empty budget id", "BudgetService/Consume", `{"tenant":"acme","amount":"1"}`, "budget_id"},
		{"empty tenant", "BudgetService/Consume", `{"budgetId":"b","amount":"1"}`, "tenant"},
		{"bad id characters", "BudgetService/Consume", `{"tenant":"acme","budgetId":"a b","amount":"1"}`, "budget_id"},
		{"long id", "BudgetService/GetBudget", `{"tenant":"acme","budgetId":"` + strings.Repeat("x", 129) + `"}`, "budget_id"},
		{"long request id", "BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"1","requestId":"` + strings.Repeat("r", 129) + `"}`, "request_id"},
		{"unknown currency", "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"XYZ"}}`, "budget.currency"},
		{"lower-case currency", "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"usd"}}`, "budget.currency"},
		{"unknown timezone", "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"USD","timezone":"Mars/Olympus"}}`, "budget.timezone"},
		{"custom period missing", "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"USD","period":"PERIOD_CUSTOM"}}`, "budget.custom_period"},
		{"thresholds unsorted", "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"USD","thresholdsPercent":[80,50]}}`, "budget.thresholds_percent"},
		{"empty budget id on create", "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"amount":"1","currency":"USD"}}`, "budget.id"},
		{"ttl too long", "BudgetService/Reserve", `{"tenant":"acme","budgetId":"b","amount":"1","ttl":"48h"}`, "ttl"},
		{"ttl not a duration", "BudgetService/Reserve", `{"tenant":"acme","budgetId":"b","amount":"1","ttl":"soon"}`, "ttl"},
		{"batch too large", "BudgetService/ConsumeBatch", `{"tenant":"acme","items":[` + strings.TrimSuffix(strings.Repeat(`{"budgetId":"b","amount":"1"},`, 1001), ",") + `]}`, "items"},
		{"batch item amount", "BudgetService/ConsumeBatch", `{"tenant":"acme","items":[{"budgetId":"b","amount":"1"},{"budgetId":"b","amount":"x"}]}`, "items[1].amount"},
		{"zero cost", "RateLimitService/Check", `{"tenant":"acme","policyId":"p","key":"k","cost":"0"}`, "cost"},
		{"empty key", "RateLimitService/Check", `{"tenant":"acme","policyId":"p"}`, "key"},
		{"zero limit", "RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"q","algorithm":"ALGORITHM_GCRA","window":"1s"}}`, "policy.limit"},
		{"no algorithm", "RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"q","limit":"1","window":"1s"}}`, "policy.algorithm"},
		{"bad window", "RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"q","algorithm":"ALGORITHM_GCRA","limit":"1","window":"0.5ms"}}`, "policy.window"},
		{"stale bound on linearizable", "BudgetService/GetBudget", `{"tenant":"acme","budgetId":"b","maxStaleness":"1s"}`, "max_staleness"},
		{"bad page token", "BudgetService/ListBudgets", `{"tenant":"acme","pageToken":"!!"}`, "page_token"},
		{"unknown update path", "BudgetService/UpdateBudget", `{"tenant":"acme","budget":{"id":"b"},"updateMask":"currency"}`, "update_mask"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := postJSON(t, addr, tc.procedure, tc.body)
			if code != http.StatusBadRequest || out["code"] != "invalid_argument" {
				t.Fatalf("HTTP %d %v, want 400 invalid_argument", code, out)
			}
			if msg, _ := out["message"].(string); !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %q", msg, tc.field)
			}
		})
	}

	t.Run("oversized body", func(t *testing.T) {
		body := `{"tenant":"acme","budgetId":"b","amount":"1","requestId":"` + strings.Repeat("x", 5<<20) + `"}`
		code, out := postJSON(t, addr, "BudgetService/Consume", body)
		if code != http.StatusTooManyRequests || out["code"] != "resource_exhausted" {
			t.Fatalf("HTTP %d %v, want resource_exhausted", code, out)
		}
	})
	t.Run("not found", func(t *testing.T) {
		code, out := postJSON(t, addr, "BudgetService/Consume", `{"tenant":"acme","budgetId":"nope","amount":"1"}`)
		if code != http.StatusNotFound || out["code"] != "not_found" {
			t.Fatalf("HTTP %d %v, want not_found", code, out)
		}
	})
	t.Run("request id reused for another request", func(t *testing.T) {
		mustOK(t, addr, "BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"1","requestId":"same"}`)
		code, out := postJSON(t, addr, "BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"2","requestId":"same"}`)
		if code != http.StatusBadRequest || out["code"] != "failed_precondition" {
			t.Fatalf("HTTP %d %v, want failed_precondition", code, out)
		}
	})
}

// TestConcurrentConsumeNeverOverspends is acceptance point 3: 200 goroutines
// through the HTTP API, 3000 attempts of 1.00 on a HARD 1000.00 budget.
func TestConcurrentConsumeNeverOverspends(t *testing.T) {
	addr := tollgatetest.StartServer(t, tollgatetest.Options{}).APIAddr()
	mustOK(t, addr, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"hard","amount":"1000.00","currency":"USD"}}`)
	mustOK(t, addr, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"parent","amount":"1000.00","currency":"USD"}}`)
	mustOK(t, addr, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"child-a","amount":"700.00","currency":"USD","parentId":"parent"}}`)
	mustOK(t, addr, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"child-b","amount":"700.00","currency":"USD","parentId":"parent"}}`)

	run := func(budgetFor func(i int) string) map[string]int {
		const goroutines, attempts = 200, 3000
		httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: goroutines}}
		var next atomic.Int64
		var mu sync.Mutex
		allowed := map[string]int{}
		var wg sync.WaitGroup
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= attempts {
						return
					}
					budget := budgetFor(i)
					body := fmt.Sprintf(`{"tenant":"acme","budgetId":%q,"amount":"1.00","requestId":"%s-%d"}`, budget, budget, i)
					resp, err := httpClient.Post("http://"+addr+"/tollgate.v1.BudgetService/Consume", "application/json", strings.NewReader(body))
					if err != nil {
						t.Error(err)
						return
					}
					var out struct{ Allowed bool }
					err = json.NewDecoder(resp.Body).Decode(&out)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusOK {
						t.Errorf("consume %d: HTTP %d %v", i, resp.StatusCode, err)
						return
					}
					if out.Allowed {
						mu.Lock()
						allowed[budget]++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		return allowed
	}

	if got := run(func(int) string { return "hard" }); got["hard"] != 1000 {
		t.Errorf("allowed %d consumes of 1.00 on 1000.00, want exactly 1000", got["hard"])
	}
	if got := mustOK(t, addr, "BudgetService/GetBudget", `{"tenant":"acme","budgetId":"hard"}`); got["remaining"] != "0.00" || got["spent"] != "1000.00" {
		t.Errorf("after the run: %v, want spent 1000.00 remaining 0.00", got)
	}

	got := run(func(i int) string { return []string{"child-a", "child-b"}[i%2] })
	if got["child-a"]+got["child-b"] != 1000 || got["child-a"] > 700 || got["child-b"] > 700 {
		t.Errorf("allowed %v, want 1000 in total (the parent's amount) and at most 700 per child", got)
	}
	for _, id := range []string{"parent", "child-a", "child-b"} {
		st := mustOK(t, addr, "BudgetService/GetBudget", fmt.Sprintf(`{"tenant":"acme","budgetId":%q}`, id))
		want := map[string]string{"parent": "1000.00", "child-a": fmt.Sprintf("%d.00", got["child-a"]), "child-b": fmt.Sprintf("%d.00", got["child-b"])}[id]
		if st["spent"] != want {
			t.Errorf("%s spent %v, want %s", id, st["spent"], want)
		}
	}
}

// TestConnectAndGRPCClients: the same handlers answer the Connect protocol
// and gRPC (over h2c), with the same codes.
func TestConnectAndGRPCClients(t *testing.T) {
	s := tollgatetest.StartServer(t, tollgatetest.Options{})
	for _, tc := range []struct {
		name string
		opts []client.Option
	}{
		{"connect-h2c", nil},
		{"connect-http1", []client.Option{client.WithHTTP1()}},
		{"grpc", []client.Option{client.WithGRPC()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tollgatetest.NewClient(t, s, tc.opts...)
			ctx := context.Background()
			id := "b-" + tc.name
			_, err := c.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
				Tenant: "acme", Budget: &tollgatev1.Budget{Id: id, Amount: "3", Currency: "EUR"}}))
			if err != nil {
				t.Fatal(err)
			}
			var allowed int
			for i := 0; i < 5; i++ {
				resp, err := c.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: "acme", BudgetId: id, Amount: "1"}))
				if err != nil {
					t.Fatal(err)
				}
				if resp.Msg.Allowed {
					allowed++
				}
			}
			if allowed != 3 {
				t.Errorf("allowed %d of 5 consumes of 1 on 3, want 3", allowed)
			}
			_, err = c.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{Tenant: "acme", BudgetId: "missing"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("get missing: %v, want NotFound", err)
			}
			_, err = c.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: "acme", BudgetId: id, Amount: "1.0000001"}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("bad amount: %v, want InvalidArgument", err)
			}
		})
	}
}

// TestSDKSetsRequestIDAndReplays: the SDK fills request_id, and sending the
// same message again (a caller's retry) returns the identical reply and
// charges once.
func TestSDKSetsRequestIDAndReplays(t *testing.T) {
	s := tollgatetest.StartServer(t, tollgatetest.Options{})
	c := tollgatetest.NewClient(t, s)
	ctx := context.Background()
	if _, err := c.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Tenant: "acme", Budget: &tollgatev1.Budget{Id: "b", Amount: "10", Currency: "USD"}})); err != nil {
		t.Fatal(err)
	}
	msg := &tollgatev1.ConsumeRequest{Tenant: "acme", BudgetId: "b", Amount: "2.5"}
	first, err := c.Budgets.Consume(ctx, connect.NewRequest(msg))
	if err != nil {
		t.Fatal(err)
	}
	if msg.RequestId == "" {
		t.Fatal("the SDK did not set request_id")
	}
	again, err := c.Budgets.Consume(ctx, connect.NewRequest(msg))
	if err != nil {
		t.Fatal(err)
	}
	if again.Header().Get("Tollgate-Idempotent-Replay") != "true" {
		t.Error("the replay is not marked")
	}
	a, _ := json.Marshal(first.Msg)
	b, _ := json.Marshal(again.Msg)
	if !bytes.Equal(a, b) {
		t.Errorf("replayed reply %s differs from the first %s", b, a)
	}
	got, err := c.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{Tenant: "acme", BudgetId: "b"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.Spent != "2.50" {
		t.Errorf("spent %s after a consume and its replay, want 2.50", got.Msg.Spent)
	}
}

// TestReadLevels: every level answers on a single node and reports how.
func TestReadLevels(t *testing.T) {
	s := tollgatetest.StartServer(t, tollgatetest.Options{})
	c := tollgatetest.NewClient(t, s)
	ctx := context.Background()
	if _, err := c.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Tenant: "acme", Budget: &tollgatev1.Budget{Id: "b", Amount: "10", Currency: "USD"}})); err != nil {
		t.Fatal(err)
	}
	for _, level := range []tollgatev1.Consistency{
		tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE, tollgatev1.Consistency_CONSISTENCY_LEADER, tollgatev1.Consistency_CONSISTENCY_STALE,
	} {
		req := &tollgatev1.GetBudgetRequest{Tenant: "acme", BudgetId: "b", Consistency: level}
		if level == tollgatev1.Consistency_CONSISTENCY_STALE {
			req.MaxStaleness = "2s"
		}
		resp, err := c.Budgets.GetBudget(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("%s: %v", level, err)
		}
		info := resp.Msg.ReadInfo
		if info.Consistency != level || info.AppliedIndex == 0 || info.NodeId != "test-node" || info.Staleness.AsDuration() != 0 {
			t.Errorf("%s: read info %v", level, info)
		}
	}
}
