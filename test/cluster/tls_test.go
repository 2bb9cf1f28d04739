package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/auth/authtest"
	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// TestMutualTLSCluster: three processes with certificates from 'tollgate
// tls', JWT authentication and no cluster token: Raft runs over mutual
// TLS, servers forward to each other over HTTPS with their server
// certificates, clients speak HTTPS. A client certificate of the same CA
// is refused on the Raft port (AppendEntries, RequestVote) and is no
// server on the API (internal calls and Join are refused).
func TestMutualTLSCluster(t *testing.T) {
	bin := procs.Binary(t)
	pki := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("tollgate %v: %v\n%s", args, err, out)
		}
	}
	run("tls", "ca", "--out-dir", pki)
	run("tls", "cert", "--ca-dir", pki, "--role", "client", "--name", "mallory", "--out-dir", pki)
	issuer := authtest.New(t)
	admin := issuer.Token(t, "admin", "", nil)
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := procs.NewCluster(t, 3, procs.Options{Token: admin, TLS: &tls.Config{RootCAs: pool}, Auth: []string{
		"--auth-jwt-key-file", issuer.JWKSFile, "--auth-jwt-issuer", authtest.Issuer, "--auth-jwt-audience", authtest.Audience,
		"--tls-ca", filepath.Join(pki, "ca.pem")}})
	for _, n := range c.Nodes {
		host, _, _ := net.SplitHostPort(n.RaftAddr)
		run("tls", "cert", "--ca-dir", pki, "--role", "server", "--name", n.ID, "--ip", host, "--out-dir", pki)
		n.Args = append(n.Args, "--tls-cert", filepath.Join(pki, n.ID+".pem"), "--tls-key", filepath.Join(pki, n.ID+".key"))
	}
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
	mallory, err := tls.LoadX509KeyPair(filepath.Join(pki, "mallory.pem"), filepath.Join(pki, "mallory.key"))
	if err != nil {
		t.Fatal(err)
	}
	as := func(token string, n *procs.Node, cert ...tls.Certificate) *client.Client {
		return clientAs(t, n, token, client.WithTLS(&tls.Config{RootCAs: pool, Certificates: cert}))
	}
	// A tenant's writes and linearizable reads through a follower: the
	// follower forwards over HTTPS with its server certificate.
	tadmin := as(issuer.Token(t, "tenant-admin", "a", nil), follower)
	if _, err := tadmin.Budgets.CreateBudget(ctx, connect.NewRequest(&tollgatev1.CreateBudgetRequest{
		Budget: &tollgatev1.Budget{Id: "llm", Amount: "10", Currency: "USD"}, RequestId: "create"})); err != nil {
		t.Fatalf("create through a follower over TLS: %v", err)
	}
	resp, err := tadmin.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{BudgetId: "llm", Amount: "4", RequestId: "c1"}))
	if err != nil || !resp.Msg.Allowed {
		t.Fatalf("consume through a follower over TLS: %v %v", resp, err)
	}
	got, err := tadmin.Budgets.GetBudget(ctx, connect.NewRequest(&tollgatev1.GetBudgetRequest{BudgetId: "llm", Consistency: tollgatev1.Consistency_CONSISTENCY_LINEARIZABLE}))
	if err != nil || got.Msg.Spent != "4.00" {
		t.Fatalf("linearizable read on a follower over TLS: %v %v", got, err)
	}

	// The client certificate on the Raft port of every node.
	malloryCfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{mallory}, MinVersion: tls.VersionTLS13}
	for _, n := range c.Nodes {
		host, _, _ := net.SplitHostPort(n.RaftAddr)
		cfg := malloryCfg.Clone()
		cfg.ServerName = host
		tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: &dialOnly{cfg: cfg}, MaxPool: 1, Timeout: 2 * time.Second})
		hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("mallory"), Addr: []byte("mallory")}
		var aeResp raft.AppendEntriesResponse
		if err := tr.AppendEntries(raft.ServerID(n.ID), raft.ServerAddress(n.RaftAddr), &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 1 << 30}, &aeResp); err == nil {
			t.Errorf("%s: AppendEntries from a client certificate was answered (term %d)", n.ID, aeResp.Term)
		}
		var rvResp raft.RequestVoteResponse
		if err := tr.RequestVote(raft.ServerID(n.ID), raft.ServerAddress(n.RaftAddr), &raft.RequestVoteRequest{RPCHeader: hdr, Term: 1 << 30, LastLogIndex: 1 << 40, LastLogTerm: 1 << 30}, &rvResp); err == nil {
			t.Errorf("%s: RequestVote from a client certificate was answered (granted %v)", n.ID, rvResp.Granted)
		}
		tr.Close()
	}
	// On the API the client certificate is no server: no internal call,
	// no join, even with a tenant's token; an admin's Join needs the token.
	code := connect.CodeOf
	_, err = as("", leader, mallory).Cluster.Join(ctx, connect.NewRequest(&tollgatev1.JoinRequest{Addrs: []string{"127.0.0.1:1"}}))
	if code(err) != connect.CodeUnauthenticated {
		t.Errorf("Join with a client certificate and no token: %v, want unauthenticated", err)
	}
	_, err = as(issuer.Token(t, "tenant-admin", "a", nil), leader, mallory).Cluster.Join(ctx, connect.NewRequest(&tollgatev1.JoinRequest{Addrs: []string{"127.0.0.1:1"}}))
	if code(err) != connect.CodePermissionDenied {
		t.Errorf("Join with a client certificate and a tenant token: %v, want permission_denied", err)
	}
	// Raft still has its three voters, and the term never jumped.
	st, err := c.Status(leader, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 3 || st.Term > 1000 {
		t.Fatalf("after the attempts: %d members, term %d", len(st.Members), st.Term)
	}
	// A plain-HTTP client cannot talk to the API at all.
	plain, _ := client.New([]string{leader.APIAddr}, client.WithoutRetries(), client.WithToken(admin))
	defer plain.Close()
	if _, err := plain.Cluster.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{})); err == nil {
		t.Errorf("plain h2c to an HTTPS API answered")
	}
	// The CLI speaks HTTPS with --tls-ca.
	tok := filepath.Join(t.TempDir(), "admin.jwt")
	os.WriteFile(tok, []byte(admin), 0o600)
	out, err := exec.Command(bin, "status", "--addr", follower.APIAddr, "--tls-ca", filepath.Join(pki, "ca.pem"), "--token-file", tok).CombinedOutput()
	if err != nil || !strings.Contains(string(out), leader.ID) {
		t.Fatalf("CLI status over TLS: %v\n%s", err, out)
	}
}

// dialOnly is a raft.StreamLayer that only dials, with a TLS config.
type dialOnly struct{ cfg *tls.Config }

func (d *dialOnly) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(address), d.cfg)
}
func (d *dialOnly) Accept() (net.Conn, error) { select {} }
func (d *dialOnly) Close() error              { return nil }
func (d *dialOnly) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
