package main

import (
	"strings"
	"testing"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

func (n *cliNode) quota(args ...string) cliResult {
	n.t.Helper()
	return runCLI(n.t, append(append([]string{"quota"}, args...), "--addr", n.addr, "--tenant", n.tenant)...)
}

// testQuota: a fair-share pool, two consumers and their demands, consumes
// up to the allocation (then DENIED, exit 3), usage and a renewal.
func testQuota(t *testing.T, n *cliNode) {
	if r := n.quota("create", "gpu", "--resource", "gpu-hours", "--capacity", "100", "--strategy", "fair-share", "--period", "month"); r.code != 0 {
		t.Fatalf("create: exit %d %s", r.code, r.stderr)
	}
	n.quota("allocate", "gpu", "a")
	n.quota("allocate", "gpu", "b", "--weight", "3")
	n.quota("demand", "gpu", "a", "--demand", "100")
	r := n.quota("demand", "gpu", "b", "--demand", "100")
	// Weights 1:3 over 100, both demanding all of it.
	if !strings.Contains(r.stdout, "a         1       0         -    -    -      100     25         0\n") ||
		!strings.Contains(r.stdout, "b         3       0         -    -    -      100     75         0\n") {
		t.Fatalf("allocations after demands:\n%s%s", r.stdout, r.stderr)
	}
	if r := n.quota("consume", "gpu", "a", "--amount", "25"); r.code != 0 || !strings.HasPrefix(r.stdout, "ALLOWED\n") ||
		!strings.Contains(r.stdout, "used       25\n") {
		t.Fatalf("consume within the allocation: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = n.quota("consume", "gpu", "a", "--amount", "0.5")
	if r.code != exitDenied || !strings.HasPrefix(r.stdout, "DENIED\nreason     quota-exhausted\nallocated  25\nused       25\n") {
		t.Fatalf("consume past the allocation: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = n.quota("renew", "gpu")
	if r.code != 0 || !strings.Contains(r.stdout, "a         1       0         -    -    -      100     25         0\n") ||
		!strings.Contains(r.stdout, "2030-01-15T10:30:00Z  100       25    a=25\n") {
		t.Fatalf("renew: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Using up a's allocation raised one QUOTA_EXHAUSTED alert; ack it, then
	// resolve it.
	r = runCLI(t, "alert", "list", "--addr", n.addr, "--tenant", n.tenant, "--output", "json")
	var alerts tollgatev1.ListAlertsResponse
	decodeCLIJSON(t, r, &alerts)
	if len(alerts.Alerts) != 1 || alerts.Alerts[0].Kind != tollgatev1.AlertKind_ALERT_KIND_QUOTA_EXHAUSTED || alerts.Alerts[0].Group[0] != "a" {
		t.Fatalf("alerts: %v", &alerts)
	}
	id := alerts.Alerts[0].Id
	wantCLI(t, runCLI(t, "alert", "ack", id, "--by", "alice", "--addr", n.addr, "--tenant", n.tenant), 0,
		"alert     "+id+"\nstate     acknowledged\nacked by  alice\nacked at  2030-01-15T10:30:00Z\n")
	r = runCLI(t, "alert", "resolve", id, "--by", "bob", "--addr", n.addr, "--tenant", n.tenant)
	if r.code != 0 || !strings.Contains(r.stdout, "state        resolved\n") || !strings.Contains(r.stdout, "resolved by  bob\n") {
		t.Fatalf("resolve: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	wantCLIError(t, runCLI(t, "alert", "ack", id, "--by", "carol", "--addr", n.addr, "--tenant", n.tenant), 1,
		"error: failed_precondition: alert \""+id+"\" was resolved by bob\n", false)

	wantCLI(t, n.quota("list"), 0, "ID   RESOURCE   CAPACITY  STRATEGY    PERIOD  CONSUMERS\ngpu  gpu-hours  100       fair-share  month   2\n")
	wantCLIError(t, n.quota("allocate", "gpu", "c", "--min", "5", "--max", "2"), 1, "error: invalid_argument: consumer.max is below consumer.min\n", false)
	wantCLIError(t, n.quota("consume", "nope", "a", "--amount", "1"), 1, "error: not_found: quota pool \"nope\" not found in tenant \"quota\"\n", false)
}
