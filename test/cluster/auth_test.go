package cluster_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tollgate/tollgate/auth/authtest"
	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// TestAuthenticatedCluster: three processes with JWT authentication and a
// cluster token. Followers forward a tenant's consume and linearizable
// read to the leader with the cluster token; a token for tenant a cannot
// touch tenant b through any node; no token and a foreign token are
// refused; the CLI sends --token-file.
func TestAuthenticatedCluster(t *testing.T) {
	issuer := authtest.New(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "cluster.token")
	bin := procs.Binary(t)
	if out, err := exec.Command(bin, "keygen", "--cluster-token", "--out", tokenFile).CombinedOutput(); err != nil {
		t.Fatalf("keygen --cluster-token: %v: %s", err, out)
	}
	admin := issuer.Token(t, "admin", "", nil)
	c := procs.NewCluster(t, 3, procs.Options{Token: admin, Auth: []string{
		"--auth-jwt-key-file", issuer.JWKSFile, "--auth-jwt-issuer", authtest.Issuer,
		"--auth-jwt-audience", authtest.Audience, "--cluster-token-file", tokenFile}})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	var follower *procs.Node
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	as := func(token string, n *procs.Node) *client.Client { return clientAs(t, n, token) }
	code := connect.CodeOf
	// Tenant admins create their budgets through a follower (forwarded).
	for _, tenant := range []string{"a", "b"} {
		if _, err := as(issuer.Token(t, "tenant-admin", tenant, nil), follower).Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
			Budget: &tollgatev1.Budget{Id: "llm", Amount: "10", Currency: "USD"}, RequestId: "create-" + tenant})); err != nil {
			t.Fatalf("tenant-admin of %s creates through a follower: %v", tenant, err)
		}
	}
	spenderA := as(issuer.Token(t, "spender", "a", nil), follower)
	resp, err := spenderA.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{BudgetId: "llm", Amount: "3", RequestId: "c1"}))
	if err != nil || !resp.Msg.Allowed || resp.Msg.Remaining != "7.00" {
		t.Fatalf("spender of a consumes through a follower: %v %v", resp, err)
	}
	got, err := as(issuer.Token(t, "reader", "a", nil), follower).Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{
		BudgetId: "llm", Consistency: tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE}))
	if err != nil || got.Msg.Spent != "3.00" {
		t.Fatalf("reader of a, linearizable read on a follower: %v %v", got, err)
	}
	for _, n := range c.Nodes {
		_, err := spenderA.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: "b", BudgetId: "llm", Amount: "1", RequestId: "steal-" + n.ID}))
		if code(err) != connect.CodePermissionDenied {
			t.Errorf("tenant a's token on tenant b's budget via %s: %v, want permission_denied", n.ID, err)
		}
		_, err = as("", n).Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{Tenant: "a", BudgetId: "llm"}))
		if code(err) != connect.CodeUnauthenticated {
			t.Errorf("no token via %s: %v, want unauthenticated", n.ID, err)
		}
		foreign := authtest.New(t).Token(t, "admin", "", nil)
		_, err = as(foreign, n).Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{Tenant: "a", BudgetId: "llm"}))
		if code(err) != connect.CodeUnauthenticated {
			t.Errorf("a token signed by another key via %s: %v, want unauthenticated", n.ID, err)
		}
	}
	// Tenant b's budget is untouched.
	gotB, err := as(admin, leader).Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{Tenant: "b", BudgetId: "llm"}))
	if err != nil || gotB.Msg.Spent != "0.00" {
		t.Fatalf("tenant b's budget: %v %v", gotB, err)
	}
	// The CLI with --token-file.
	spenderFile := filepath.Join(dir, "spender.jwt")
	os.WriteFile(spenderFile, []byte(issuer.Token(t, "spender", "a", nil)+"\n"), 0o600)
	out, err := exec.Command(bin, "budget", "consume", "llm", "--amount", "1", "--tenant", "a", "--token-file", spenderFile, "--addr", follower.APIAddr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ALLOWED") {
		t.Fatalf("CLI consume with --token-file: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "budget", "get", "llm", "--tenant", "a", "--addr", follower.APIAddr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unauthenticated") {
		t.Fatalf("CLI without a token: %v\n%s", err, out)
	}
}
