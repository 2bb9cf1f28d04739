package transport_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/tollgate/tollgate/auth"
	"github.com/tollgate/tollgate/auth/authtest"
	"github.com/tollgate/tollgate/client"
	_ "github.com/tollgate/tollgate/gen/tollgate/v1"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
	"github.com/tollgate/tollgate/tollgatetest"
	"github.com/tollgate/tollgate/transport"
)

// rpc is one method of one service, from the compiled descriptors: the
// list a test cannot forget to extend.
type rpc struct {
	procedure    string
	clientStream bool
	serverStream bool
	hasTenant    bool
}

func allRPCs(t *testing.T) []rpc {
	t.Helper()
	var out []rpc
	protoregistry.GlobalFiles.RangeFilesByPackage("tollgate.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			s := fd.Services().Get(i)
			for j := 0; j < s.Methods().Len(); j++ {
				m := s.Methods().Get(j)
				out = append(out, rpc{procedure: "/" + string(s.FullName()) + "/" + string(m.Name()),
					clientStream: m.IsStreamingClient(), serverStream: m.IsStreamingServer(),
					hasTenant: m.Input().Fields().ByName("tenant") != nil})
			}
		}
		return true
	})
	if len(out) < 50 {
		t.Fatalf("found only %d RPCs in tollgate.v1: descriptors not registered?", len(out))
	}
	return out
}

// TestEveryRPCHasARule: the authorization table names every RPC of every
// service, and nothing else.
func TestEveryRPCHasARule(t *testing.T) {
	rpcs := allRPCs(t)
	seen := map[string]bool{}
	for _, r := range rpcs {
		seen[r.procedure] = true
		if _, ok := transport.AuthorizationRule(r.procedure); !ok {
			t.Errorf("%s has no authorization rule", r.procedure)
		}
	}
	for _, p := range transport.AuthorizationProcedures() {
		if !seen[p] {
			t.Errorf("authorization rule for %s, which is no RPC", p)
		}
	}
}

// authFixture is a node with JWT authentication and a cluster token, and
// an issuer to mint tokens.
type authFixture struct {
	addr   string
	issuer *authtest.TokenIssuer
	token  []byte
}

func newAuthFixture(t *testing.T, limit transport.RateLimit) *authFixture {
	t.Helper()
	issuer := authtest.New(t)
	v, err := auth.NewJWTVerifier(auth.JWTConfig{KeyFiles: []string{issuer.JWKSFile}, Issuer: authtest.Issuer, Audience: authtest.Audience})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	a := &auth.Authenticator{JWT: v}
	token := []byte("cluster-token-of-32-bytes-length")
	a.SetClusterToken(token)
	s := tollgatetest.StartServer(t, tollgatetest.Options{Auth: a, APIRateLimit: limit})
	return &authFixture{addr: s.APIAddr(), issuer: issuer, token: token}
}

func (f *authFixture) mint(t *testing.T, role, tenant string, edit func(*jwt.Builder) *jwt.Builder) string {
	t.Helper()
	return "Bearer " + f.issuer.Token(t, role, tenant, edit)
}

// call sends body ({} with a tenant) to a procedure over the Connect
// protocol with JSON, as curl would, and returns the Connect error code
// ("" when the call succeeded or a stream stayed open until the deadline).
func call(t *testing.T, addr string, r rpc, authz, body string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	streaming := r.clientStream || r.serverStream
	var payload io.Reader = strings.NewReader(body)
	ctype := "application/json"
	if streaming {
		var env bytes.Buffer
		env.WriteByte(0)
		binary.Write(&env, binary.BigEndian, uint32(len(body)))
		env.WriteString(body)
		if r.clientStream {
			// End of the client's stream.
			env.WriteByte(2)
			binary.Write(&env, binary.BigEndian, uint32(2))
			env.WriteString("{}")
		}
		payload, ctype = &env, "application/connect+json"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+r.procedure, payload)
	req.Header.Set("Content-Type", ctype)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", r.procedure, err)
	}
	defer resp.Body.Close()
	if !streaming {
		if resp.StatusCode == http.StatusOK {
			return ""
		}
		var e struct{ Code string }
		json.NewDecoder(resp.Body).Decode(&e)
		return e.Code
	}
	// Read envelopes until the end-of-stream one.
	for {
		var head [5]byte
		if _, err := io.ReadFull(resp.Body, head[:]); err != nil {
			return "" // deadline: the stream was open and serving
		}
		msg := make([]byte, binary.BigEndian.Uint32(head[1:]))
		if _, err := io.ReadFull(resp.Body, msg); err != nil {
			return ""
		}
		if head[0]&2 != 0 {
			var end struct{ Error *struct{ Code string } }
			json.Unmarshal(msg, &end)
			if end.Error == nil {
				return ""
			}
			return end.Error.Code
		}
	}
}

// TestEveryRPCRefusesStrangers: for every RPC of every service — no
// token, an expired, a wrong-audience and a wrongly signed token, tenant A's strongest tenant
// token naming tenant B, a server's cluster token on a client RPC and a
// client token on a server RPC are all refused before the handler runs.
func TestEveryRPCRefusesStrangers(t *testing.T) {
	f := newAuthFixture(t, transport.RateLimit{})
	tenantAdminA := f.mint(t, "tenant-admin", "a", nil)
	expired := f.mint(t, "admin", "", func(b *jwt.Builder) *jwt.Builder { return b.Expiration(time.Now().Add(-time.Hour)) })
	wrongAud := f.mint(t, "admin", "", func(b *jwt.Builder) *jwt.Builder { return b.Audience([]string{"other-cluster"}) })
	server := auth.ClusterTokenHeader(f.token)
	admin := f.mint(t, "admin", "", nil)
	// Same claims and key id, signed by a key the cluster does not have.
	forged := "Bearer " + authtest.New(t).Token(t, "admin", "", nil)
	for _, r := range allRPCs(t) {
		rule, _ := transport.AuthorizationRule(r.procedure)
		want := map[string]string{
			"no token":      "unauthenticated",
			"expired":       "unauthenticated",
			"wrong aud":     "unauthenticated",
			"wrong sig":     "unauthenticated",
			"wrong cluster": "unauthenticated",
		}
		authz := map[string]string{
			"no token":      "",
			"expired":       expired,
			"wrong aud":     wrongAud,
			"wrong sig":     forged,
			"wrong cluster": auth.ClusterTokenHeader([]byte("not-the-cluster-token-000000000")),
			"A on B":        tenantAdminA,
			"server":        server,
			"admin":         admin,
		}
		switch rule {
		case "read", "spend", "manage":
			want["A on B"] = "permission_denied"
			want["server"] = "permission_denied"
		case "admin":
			want["A on B"] = "permission_denied"
			want["server"] = "permission_denied"
		case "server":
			want["A on B"] = "permission_denied"
			want["admin"] = "permission_denied"
		}
		for name, w := range want {
			if got := call(t, f.addr, r, authz[name], `{"tenant":"b"}`); got != w {
				t.Errorf("%s, %s: code %q, want %q", r.procedure, name, got, w)
			}
		}
	}
}

// TestRolesAndTenants: what each role may do in its own tenant, and that
// a request without a tenant gets the credential's.
func TestRolesAndTenants(t *testing.T) {
	f := newAuthFixture(t, transport.RateLimit{})
	post := func(authz, proc, body string) string {
		return call(t, f.addr, rpc{procedure: "/tollgate.v1." + proc}, authz, body)
	}
	reader, spender, tadmin := f.mint(t, "reader", "a", nil), f.mint(t, "spender", "a", nil), f.mint(t, "tenant-admin", "a", nil)
	create := `{"tenant":"a","budget":{"id":"b1","amount":"10","currency":"USD","period":"PERIOD_NONE"}}`
	for _, tc := range []struct{ who, authz, proc, body, want string }{
		{"reader", reader, "BudgetService/CreateBudget", create, "permission_denied"},
		{"spender", spender, "BudgetService/CreateBudget", create, "permission_denied"},
		{"tenant-admin", tadmin, "BudgetService/CreateBudget", create, ""},
		{"reader", reader, "BudgetService/GetBudget", `{"tenant":"a","budgetId":"b1"}`, ""},
		{"reader", reader, "BudgetService/Consume", `{"tenant":"a","budgetId":"b1","amount":"1","requestId":"r1"}`, "permission_denied"},
		// No tenant in the request: the credential's is used.
		{"spender", spender, "BudgetService/Consume", `{"budgetId":"b1","amount":"1","requestId":"r1"}`, ""},
		{"tenant-admin", tadmin, "CostService/SetExchangeRates", `{"rates":[]}`, "permission_denied"},
		{"tenant-admin", tadmin, "ClusterService/TransferLeadership", `{}`, "permission_denied"},
		{"reader", reader, "ClusterService/Status", `{}`, ""},
		{"tenant-admin", tadmin, "InternalService/ReadIndex", `{}`, "permission_denied"},
		{"server", auth.ClusterTokenHeader(f.token), "InternalService/ReadIndex", `{}`, ""},
	} {
		if got := post(tc.authz, tc.proc, tc.body); got != tc.want {
			t.Errorf("%s %s: code %q, want %q", tc.who, tc.proc, got, tc.want)
		}
	}
	var got map[string]any
	resp, err := http.Post("http://"+f.addr+"/tollgate.v1.BudgetService/GetBudget", "application/json", strings.NewReader(`{"tenant":"a","budgetId":"b1"}`))
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got["code"] != "unauthenticated" {
		t.Fatalf("no token: %v", got)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+f.addr+"/tollgate.v1.BudgetService/GetBudget", strings.NewReader(`{"budgetId":"b1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", reader)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got["spent"] != "1.00" {
		t.Fatalf("tenant a's budget read without naming the tenant: %v, want spent 1.00", got)
	}
}

// TestAPIRateLimitPerCredential: a credential past its calls per second is
// refused with resource_exhausted; another credential is not affected.
func TestAPIRateLimitPerCredential(t *testing.T) {
	f := newAuthFixture(t, transport.RateLimit{PerSecond: 1, Burst: 5})
	r := rpc{procedure: "/tollgate.v1.ClusterService/Status"}
	greedy, other := f.mint(t, "reader", "a", nil), f.mint(t, "reader", "b", nil)
	codes := map[string]int{}
	for i := 0; i < 8; i++ {
		codes[call(t, f.addr, r, greedy, `{}`)]++
	}
	// 5 in the burst, at most one refill during the loop.
	if codes[""] < 5 || codes[""] > 6 || codes["resource_exhausted"] != 8-codes[""] {
		t.Fatalf("8 calls with burst 5 at 1/s: %v", codes)
	}
	if got := call(t, f.addr, r, other, `{}`); got != "" {
		t.Fatalf("another credential: %q", got)
	}
	if got := call(t, f.addr, r, auth.ClusterTokenHeader(f.token), `{}`); got != "" {
		t.Fatalf("a server is not limited: %q", got)
	}
}

// TestAPIKeys: a tenant-admin makes a spender key (its secret shown once,
// never listed), the key works for its tenant only and its role only, a
// retry of the create does not show a secret again, a tenant-admin cannot
// make an admin key, and a revoked key is refused at once on this node.
func TestAPIKeys(t *testing.T) {
	f := newAuthFixture(t, transport.RateLimit{})
	ctx := context.Background()
	cl := func(token string) *client.Client {
		c, err := client.New([]string{f.addr}, client.WithoutRetries(), client.WithToken(token))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	code := connect.CodeOf
	tadmin := cl(f.issuer.Token(t, "tenant-admin", "a", nil))
	if _, err := tadmin.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Budget: &tollgatev1.Budget{Id: "llm", Amount: "10", Currency: "USD"}, RequestId: "cb"})); err != nil {
		t.Fatal(err)
	}
	// The admin action's receipt names the credential.
	rc, err := tadmin.Receipts.GetReceipt(ctx, connect.NewRequest(&tollgatev1.GetReceiptRequest{RequestId: "cb"}))
	if err != nil || rc.Msg.Receipt.DecodedLeaf.Inputs["by"] != "tenant-admin@a (jwt)" {
		t.Fatalf("the budget's receipt: %v %v", rc, err)
	}
	created, err := tadmin.APIKeys.CreateApiKey(ctx, connect.NewRequest(&tollgatev1.CreateApiKeyRequest{Role: "spender", Name: "ci", RequestId: "k1"}))
	if err != nil {
		t.Fatal(err)
	}
	secret := created.Msg.Secret
	if !strings.HasPrefix(secret, "tgk_"+created.Msg.Key.Id+"_") || created.Msg.Key.Tenant != "a" || created.Msg.Receipt == nil ||
		!strings.Contains(created.Msg.Key.CreatedBy, "tenant-admin@a") {
		t.Fatalf("created %+v", created.Msg)
	}
	// A retry does not show the secret again.
	_, err = tadmin.APIKeys.CreateApiKey(ctx, connect.NewRequest(&tollgatev1.CreateApiKeyRequest{Role: "spender", Name: "ci", RequestId: "k1"}))
	if code(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), created.Msg.Key.Id) {
		t.Fatalf("retry of the create: %v, want already_exists naming %s", err, created.Msg.Key.Id)
	}
	_, err = tadmin.APIKeys.CreateApiKey(ctx, connect.NewRequest(&tollgatev1.CreateApiKeyRequest{Role: "admin", Name: "escalate"}))
	if code(err) != connect.CodePermissionDenied {
		t.Fatalf("tenant-admin makes an admin key: %v", err)
	}
	_, err = tadmin.APIKeys.CreateApiKey(ctx, connect.NewRequest(&tollgatev1.CreateApiKeyRequest{Tenant: "b", Role: "reader"}))
	if code(err) != connect.CodePermissionDenied {
		t.Fatalf("tenant-admin of a makes a key in b: %v", err)
	}
	list, err := tadmin.APIKeys.ListApiKeys(ctx, connect.NewRequest(&tollgatev1.ListApiKeysRequest{}))
	if err != nil || len(list.Msg.Keys) != 1 || strings.Contains(list.Msg.String(), strings.Split(secret, "_")[2]) {
		t.Fatalf("list: %v %v", list, err)
	}
	key := cl(secret)
	resp, err := key.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{BudgetId: "llm", Amount: "1", RequestId: "c1"}))
	if err != nil || !resp.Msg.Allowed {
		t.Fatalf("consume with the key: %v %v", resp, err)
	}
	if _, err := key.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{Tenant: "b", BudgetId: "llm", Amount: "1"})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("the key on tenant b: %v", err)
	}
	if _, err := key.Budgets.DeleteBudget(ctx, connect.NewRequest(&tollgatev1.DeleteBudgetRequest{BudgetId: "llm"})); code(err) != connect.CodePermissionDenied {
		t.Fatalf("a spender key deletes a budget: %v", err)
	}
	wrong := secret[:len(secret)-2] + "xx"
	if _, err := cl(wrong).Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{BudgetId: "llm"})); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("a wrong secret: %v", err)
	}
	revoked, err := tadmin.APIKeys.RevokeApiKey(ctx, connect.NewRequest(&tollgatev1.RevokeApiKeyRequest{Id: created.Msg.Key.Id}))
	if err != nil || revoked.Msg.Key.RevokedAt == nil || revoked.Msg.Receipt == nil {
		t.Fatalf("revoke: %v %v", revoked, err)
	}
	if _, err := key.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{BudgetId: "llm"})); code(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the revoked key: %v", err)
	}
}

// TestStreamsPerCredential: one credential may hold StreamsPerCallerMax
// alert streams open on a node; one more is refused with
// resource_exhausted until one closes; another credential is not affected.
func TestStreamsPerCredential(t *testing.T) {
	f := newAuthFixture(t, transport.RateLimit{})
	open := func(token string, ctx context.Context) *connect.ServerStreamForClient[tollgatev1.WatchAlertsResponse] {
		t.Helper()
		c, err := client.New([]string{f.addr}, client.WithoutRetries(), client.WithToken(token))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		s, err := c.Alerts.WatchAlerts(ctx, connect.NewRequest(&tollgatev1.WatchAlertsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// probe opens one more stream for a moment: refused, or still open.
	probe := func(token string) connect.Code {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		s := open(token, ctx)
		defer s.Close()
		if s.Receive() {
			return 0
		}
		if connect.CodeOf(s.Err()) == connect.CodeResourceExhausted {
			return connect.CodeResourceExhausted
		}
		return 0 // the deadline: it was admitted
	}
	greedy := f.mint(t, "reader", "a", nil)[len("Bearer "):]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancels := make([]context.CancelFunc, transport.StreamsPerCallerMax)
	for i := 0; i < transport.StreamsPerCallerMax; i++ {
		sctx, scancel := context.WithCancel(ctx)
		cancels[i] = scancel
		s := open(greedy, sctx)
		go s.Receive() // blocks until the stream ends
	}
	if !procs.Poll(10*time.Second, 50*time.Millisecond, func() bool { return probe(greedy) == connect.CodeResourceExhausted }) {
		t.Fatalf("stream %d of one credential was never refused", transport.StreamsPerCallerMax+1)
	}
	other := f.mint(t, "reader", "b", nil)[len("Bearer "):]
	if got := probe(other); got != 0 {
		t.Fatalf("another credential's stream: %v", got)
	}
	cancels[0]()
	if !procs.Poll(10*time.Second, 50*time.Millisecond, func() bool { return probe(greedy) == 0 }) {
		t.Fatal("a closed stream did not make room")
	}
}
