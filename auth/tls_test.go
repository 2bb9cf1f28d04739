package auth

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCertRolesAndLoad(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, err := NewCA("ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", caCert)
	leaf := func(certPEM []byte) *x509.Certificate {
		b, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	sc, sk, err := NewCert(caCert, caKey, CertSpec{Role: CertRoleServer, CommonName: "n1", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r := CertRole(leaf(sc)); r != CertRoleServer {
		t.Fatalf("server cert role %q", r)
	}
	if _, err := LoadTLS(write("n1.pem", sc), write("n1.key", sk), caFile); err != nil {
		t.Fatalf("load a server cert: %v", err)
	}
	cc, ck, err := NewCert(caCert, caKey, CertSpec{Role: CertRoleClient, CommonName: "ops", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r := CertRole(leaf(cc)); r != CertRoleClient {
		t.Fatalf("client cert role %q", r)
	}
	if _, err := LoadTLS(write("ops.pem", cc), write("ops.key", ck), caFile); err == nil || !strings.Contains(err.Error(), `role "client"`) {
		t.Fatalf("a server started with a client certificate: %v", err)
	}
	otherCA, _, _ := NewCA("other", time.Hour)
	if _, err := LoadTLS(filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1.key"), write("other.pem", otherCA)); err == nil {
		t.Fatal("a certificate of another CA loaded")
	}
	for name, spec := range map[string]CertSpec{
		"no role":              {CommonName: "x", Validity: time.Hour},
		"server without names": {Role: CertRoleServer, CommonName: "x", Validity: time.Hour},
		"past the CA":          {Role: CertRoleClient, CommonName: "x", Validity: 48 * time.Hour},
	} {
		if _, _, err := NewCert(caCert, caKey, spec); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}
