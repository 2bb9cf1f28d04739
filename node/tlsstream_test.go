package node

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/auth"
)

// testPKI issues certificates from a fresh CA into dir.
type testPKI struct {
	dir           string
	caCert, caKey []byte
	caFile        string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := auth.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, caCert: cert, caKey: key, caFile: filepath.Join(dir, "ca.pem")}
	os.WriteFile(p.caFile, cert, 0o600)
	return p
}

// issue returns the cert and key files of a new certificate.
func (p *testPKI) issue(t *testing.T, name, role string, ips ...string) (string, string) {
	t.Helper()
	spec := auth.CertSpec{Role: role, CommonName: name, Validity: time.Hour}
	for _, ip := range ips {
		spec.IPs = append(spec.IPs, net.ParseIP(ip))
	}
	cert, key, err := auth.NewCert(p.caCert, p.caKey, spec)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	os.WriteFile(cf, cert, 0o600)
	os.WriteFile(kf, key, 0o600)
	return cf, kf
}

// attacker is a Raft transport dialing with the given client TLS config.
func attacker(t *testing.T, client *tls.Config) *raft.NetworkTransport {
	t.Helper()
	cfg := &RaftTLS{Server: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, Certificates: client.Certificates}, Client: client}
	s, err := newTLSStreamLayer("127.0.0.1:0", nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: s, MaxPool: 1, Timeout: 2 * time.Second})
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestRaftTLSAdmitsOnlyServers ([security] acceptance 1): with Raft over
// mutual TLS, AppendEntries and RequestVote from a client-role certificate
// of the cluster CA, from a server certificate of another CA, and from
// plain TCP are refused at the handshake, and the node's term does not
// move; a server certificate of the cluster CA is answered.
func TestRaftTLSAdmitsOnlyServers(t *testing.T) {
	pki := newTestPKI(t)
	cf, kf := pki.issue(t, "n1", auth.CertRoleServer, "127.0.0.1")
	files, err := auth.LoadTLS(cf, kf, pki.caFile)
	if err != nil {
		t.Fatal(err)
	}
	n := mustNewNode(t, t.TempDir(), func(c *Config) {
		c.RaftTLS = &RaftTLS{Server: files.RaftServerConfig(), Client: files.PeerClientConfig()}
	})
	addr := raft.ServerAddress(n.RaftAddr())
	termBefore := n.raft.CurrentTerm()

	clientConfig := func(certFile, keyFile string, caFile string) *tls.Config {
		t.Helper()
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		f := &auth.TLSFiles{Cert: cert}
		lf, err := auth.LoadTLS(cf, kf, caFile) // the CA pool the attacker trusts
		if err != nil {
			t.Fatal(err)
		}
		f.CAs = lf.CAs
		c := f.PeerClientConfig()
		return c
	}
	ccf, ckf := pki.issue(t, "mallory", auth.CertRoleClient)
	other := newTestPKI(t)
	ocf, okf := other.issue(t, "n9", auth.CertRoleServer, "127.0.0.1")
	scf, skf := pki.issue(t, "n2", auth.CertRoleServer, "127.0.0.1")

	ae := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte("x")}, Term: termBefore + 100, PrevLogEntry: 0, LeaderCommitIndex: 0}
	rv := &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte("x")}, Term: termBefore + 100, LastLogIndex: 1 << 40, LastLogTerm: termBefore + 100}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"client-role certificate of the cluster CA", clientConfig(ccf, ckf, pki.caFile)},
		{"server certificate of another CA", clientConfig(ocf, okf, pki.caFile)},
	} {
		tr := attacker(t, tc.cfg)
		var aeResp raft.AppendEntriesResponse
		if err := tr.AppendEntries("n1", addr, ae, &aeResp); err == nil {
			t.Errorf("%s: AppendEntries answered (term %d)", tc.name, aeResp.Term)
		}
		var rvResp raft.RequestVoteResponse
		if err := tr.RequestVote("n1", addr, rv, &rvResp); err == nil {
			t.Errorf("%s: RequestVote answered (granted %v)", tc.name, rvResp.Granted)
		}
	}
	// Plain TCP: the bytes of a Raft RPC are not a TLS handshake.
	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var aeResp raft.AppendEntriesResponse
	if err := plain.AppendEntries("n1", addr, ae, &aeResp); err == nil {
		t.Errorf("plain TCP: AppendEntries answered")
	}
	if got := n.raft.CurrentTerm(); got != termBefore {
		t.Fatalf("term moved from %d to %d: a refused peer reached Raft", termBefore, got)
	}
	if st := n.raft.State(); st != raft.Leader {
		t.Fatalf("the node is %s after the refused RPCs, want Leader", st)
	}
	// A server of the cluster is answered: its stale-term AppendEntries is
	// rejected by Raft itself, with the current term.
	good := attacker(t, clientConfig(scf, skf, pki.caFile))
	stale := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n2"), Addr: []byte("n2")}, Term: 0}
	if err := good.AppendEntries("n1", addr, stale, &aeResp); err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	if aeResp.Success || aeResp.Term != termBefore {
		t.Fatalf("server's stale AppendEntries: success %v term %d, want refused in term %d", aeResp.Success, aeResp.Term, termBefore)
	}
	// Host names are verified: dialing the node by a name its certificate
	// does not carry fails.
	if err := good.AppendEntries("n1", raft.ServerAddress(strings.Replace(string(addr), "127.0.0.1", "localhost", 1)), stale, &aeResp); err == nil {
		t.Fatalf("dialing localhost (not in the certificate) succeeded")
	}
}
