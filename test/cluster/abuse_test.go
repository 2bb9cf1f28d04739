package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// TestAbuseLimits ([security] acceptance 1, the size and connection parts)
// on a real server process: a 10 MiB request is refused with
// resource_exhausted before it is decoded, and 10,000 idle connections held
// open against the API do not keep real clients from being served.
func TestAbuseLimits(t *testing.T) {
	c := procs.NewCluster(t, 1, procs.Options{})
	c.StartAll()
	n := c.WaitLeader(30 * time.Second)

	body := `{"tenant":"acme","budget":{"id":"big","amount":"1","currency":"USD","parentId":"` + strings.Repeat("x", 10<<20) + `"}}`
	resp, err := http.Post("http://"+n.APIAddr+"/tollgate.v1.BudgetService/CreateBudget", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Code string }
	json.Unmarshal(raw, &e)
	if e.Code != "resource_exhausted" {
		t.Fatalf("10 MiB request: HTTP %d %s", resp.StatusCode, bytes.TrimSpace(raw[:min(len(raw), 200)]))
	}

	const idle = 10_000
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for len(conns) < idle {
		conn, err := net.DialTimeout("tcp", n.APIAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(conns), err)
		}
		conns = append(conns, conn)
	}
	// Real clients are served while the idle ones are held.
	cl := mustClient(t, c.APIAddrs())
	ctx := context.Background()
	createBudget(t, cl, tenant, "real", "100")
	for i := 0; i < 100; i++ {
		r, err := cl.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: tenant, BudgetId: "real", Amount: "0.5"}))
		if err != nil || !r.Msg.Allowed {
			t.Fatalf("consume %d with %d idle connections open: %v %v", i, idle, r, err)
		}
	}
	// The server drops connections that never send a request (slowloris):
	// the oldest idle one reads EOF within the header timeout.
	conns[0].SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err == nil {
		t.Error("an idle connection got data instead of being closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("an idle connection was still open after 30s")
	}
}
