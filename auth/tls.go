package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"time"
)

// Certificate roles. A tollgate certificate names its role in a URI SAN;
// the role is checked on every connection (a cluster-CA certificate is
// not enough to speak Raft: CVE-2021-37219, CVE-2020-7956 in systems like
// this one).
const (
	// CertRoleServer may speak Raft and call other servers' internal API.
	CertRoleServer = "server"
	// CertRoleClient identifies a client of the API (it still needs a
	// bearer token to be authorized).
	CertRoleClient = "client"
	roleURIPrefix  = "urn:tollgate:role:"
)

// CertRole is the role a certificate names ("" when it names none).
func CertRole(c *x509.Certificate) string {
	role := ""
	for _, u := range c.URIs {
		if s := u.String(); len(s) > len(roleURIPrefix) && s[:len(roleURIPrefix)] == roleURIPrefix {
			if role != "" {
				return "" // two roles: trust neither
			}
			role = s[len(roleURIPrefix):]
		}
	}
	return role
}

// TLSFiles are a node's certificate, key and the cluster CA.
type TLSFiles struct {
	Cert tls.Certificate
	Leaf *x509.Certificate
	CAs  *x509.CertPool
}

// LoadTLS reads PEM files; the certificate must be valid now, chain to the
// CA and name the server role.
func LoadTLS(certFile, keyFile, caFile string) (*TLSFiles, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s / key %s: %w", certFile, keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s: %w", certFile, err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls: CA %s holds no PEM certificate", caFile)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("tls: certificate %s does not verify with CA %s: %w", certFile, caFile, err)
	}
	if r := CertRole(leaf); r != CertRoleServer {
		return nil, fmt.Errorf("tls: certificate %s has role %q, a server needs %q (tollgate tls cert --role server)", certFile, r, CertRoleServer)
	}
	cert.Leaf = leaf
	return &TLSFiles{Cert: cert, Leaf: leaf, CAs: pool}, nil
}

// requireRole checks the verified peer certificate's role.
func requireRole(role string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
			return errors.New("tls: peer presented no verified certificate")
		}
		if got := CertRole(cs.PeerCertificates[0]); got != role {
			return fmt.Errorf("tls: peer certificate %q has role %q, want %q", cs.PeerCertificates[0].Subject.CommonName, got, role)
		}
		return nil
	}
}

// RaftServerConfig accepts Raft connections from servers only: a client
// certificate chained to the CA with the server role.
func (f *TLSFiles) RaftServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{f.Cert},
		ClientCAs:        f.CAs,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		VerifyConnection: requireRole(CertRoleServer),
	}
}

// PeerClientConfig dials another server (Raft or its API): the server's
// certificate must chain to the CA, carry the server role and name the
// host dialed (ServerName, set per dial); ours goes along.
func (f *TLSFiles) PeerClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{f.Cert},
		RootCAs:          f.CAs,
		VerifyConnection: requireRole(CertRoleServer),
	}
}

// APIServerConfig serves the API over TLS; a client certificate is
// optional, and verified against the CA when given (a server's makes the
// caller a server; see Authenticator).
func (f *TLSFiles) APIServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{f.Cert},
		ClientCAs:    f.CAs,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// CertSpec describes a certificate to issue.
type CertSpec struct {
	Role       string // CertRoleServer or CertRoleClient
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	Validity   time.Duration
}

// NewCA makes a self-signed ECDSA P-256 CA certificate and key (PEM).
func NewCA(name string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"tollgate"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// NewCert issues a certificate for spec, signed by the CA (PEM).
func NewCert(caCertPEM, caKeyPEM []byte, spec CertSpec) (certPEM, keyPEM []byte, err error) {
	if spec.Role != CertRoleServer && spec.Role != CertRoleClient {
		return nil, nil, fmt.Errorf("tls: role %q: want server or client", spec.Role)
	}
	if spec.Role == CertRoleServer && len(spec.DNSNames) == 0 && len(spec.IPs) == 0 {
		return nil, nil, errors.New("tls: a server certificate needs the host names or IPs peers dial it at (host names are verified)")
	}
	ca, err := tls.X509KeyPair(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: CA: %w", err)
	}
	caLeaf, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	if !caLeaf.IsCA {
		return nil, nil, errors.New("tls: the CA certificate is not a CA")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	roleURI, _ := url.Parse(roleURIPrefix + spec.Role)
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if spec.Role == CertRoleServer {
		usages = append(usages, x509.ExtKeyUsageServerAuth) // servers dial each other too
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: []string{"tollgate"}},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(spec.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
		DNSNames:     slices.Clone(spec.DNSNames),
		IPAddresses:  slices.Clone(spec.IPs),
		URIs:         []*url.URL{roleURI},
	}
	if tmpl.NotAfter.After(caLeaf.NotAfter) {
		return nil, nil, fmt.Errorf("tls: validity %s reaches past the CA's expiry %s", spec.Validity, caLeaf.NotAfter.Format(time.RFC3339))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caLeaf, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func encode(der []byte, key *ecdsa.PrivateKey) ([]byte, []byte, error) {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}
