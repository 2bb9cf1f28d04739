package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RaftTLS secures Raft traffic: Server is the listener's configuration
// (it must require and verify client certificates and check their role),
// Client the dialer's (ServerName is set to the host of each address
// dialed, so host names are verified).
type RaftTLS struct {
	Server *tls.Config
	Client *tls.Config
}

// handshakeTimeout bounds a Raft connection's TLS handshake: a peer that
// connects and says nothing is dropped.
const handshakeTimeout = 10 * time.Second

// tlsStreamLayer is a raft.StreamLayer over TLS.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	client    *tls.Config
}

func newTLSStreamLayer(bind string, advertise net.Addr, cfg *RaftTLS) (*tlsStreamLayer, error) {
	if cfg.Server == nil || cfg.Client == nil {
		return nil, errors.New("node: RaftTLS needs Server and Client configurations")
	}
	if cfg.Server.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("node: RaftTLS.Server must require and verify client certificates")
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("node: raft address %s is not advertisable (set RaftAdvertise)", advertise)
	}
	return &tlsStreamLayer{ln: tls.NewListener(ln, cfg.Server), advertise: advertise, client: cfg.Client}, nil
}

func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakeFirst{Conn: c.(*tls.Conn)}, nil
}

func (s *tlsStreamLayer) Close() error   { return s.ln.Close() }
func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }

func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, err
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", string(address))
}

// handshakeFirst completes the TLS handshake, within handshakeTimeout,
// before the first read or write of an accepted connection (raft reads in
// its own goroutine per connection, so the accept loop is never held).
type handshakeFirst struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (h *handshakeFirst) handshake() error {
	h.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		h.err = h.Conn.HandshakeContext(ctx)
	})
	return h.err
}

func (h *handshakeFirst) Read(p []byte) (int, error) {
	if err := h.handshake(); err != nil {
		return 0, err
	}
	return h.Conn.Read(p)
}

func (h *handshakeFirst) Write(p []byte) (int, error) {
	if err := h.handshake(); err != nil {
		return 0, err
	}
	return h.Conn.Write(p)
}
