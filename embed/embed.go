// Package embed starts a complete tollgate server (node + API) inside a Go
// process. `tollgate serve` and tests (tollgatetest) both use it, so there is
// one way to wire a server.
package embed

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tollgate/tollgate/auth"
	"github.com/tollgate/tollgate/node"
	"github.com/tollgate/tollgate/transport"
)

// Config of an embedded server.
type Config struct {
	NodeID  string
	DataDir string
	// APIAddr and RaftAddr are bind addresses; port 0 picks a free port.
	APIAddr  string
	RaftAddr string
	// RaftAdvertise / APIAdvertise are the addresses peers and clients dial
	// (default: the bound ones).
	RaftAdvertise string
	APIAdvertise  string
	// Bootstrap a one-voter cluster when the data dir is fresh (and neither
	// Join nor BootstrapExpect say the cluster has several servers).
	Bootstrap bool
	// GossipAddr binds the gossip pool ("" = no gossip: a single node);
	// GossipAdvertise is what other members dial.
	GossipAddr      string
	GossipAdvertise string
	// GossipKey and GossipLabel secure the gossip pool; see node.Config.
	GossipKey       []byte
	GossipLabel     string
	Join            []string
	BootstrapExpect int
	DeadServerGrace time.Duration
	// ReconcileInterval and FastGossip tune membership for tests.
	ReconcileInterval time.Duration
	FastGossip        bool
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// LogStore is the Raft log store of a new data dir, "bolt" (default) or
	// "wal" (unsafe, benchmarks only); see node.Config.
	LogStore string
	// ElectionTimeout (default 1s); see node.Config.
	ElectionTimeout time.Duration
	// RaftLogLevel is hashicorp/raft's log level (default "error").
	RaftLogLevel string
	Version      string
	Logger       *slog.Logger
	// Clock overrides the leader's clock (tests only).
	Clock func() time.Time
	// SigningKey is the first receipt signing key of a new cluster (nil: the
	// first leader generates one); see node.Config.
	SigningKey ed25519.PrivateKey
	// ReceiptRetention is how long this node keeps receipts (0: forever).
	ReceiptRetention time.Duration
	// NoReceipts turns receipts off (benchmarks of their cost only).
	NoReceipts bool
	// Pprof serves /debug/pprof/ on the API port.
	Pprof bool
	// Auth authenticates API calls (nil: authentication off, every caller
	// is an admin; --dev and --insecure only).
	Auth transport.Authenticator
	// ClusterToken is presented to other nodes' APIs (forwarding, reads,
	// receipt repair); they must accept it (auth.Authenticator.SetClusterToken).
	ClusterToken []byte
	// APIRateLimit is the API's own limit per credential.
	APIRateLimit transport.RateLimit
	// TLS, when set, serves the API over HTTPS (auth.TLSFiles.APIServerConfig),
	// runs Raft over mutual TLS and makes calls to other nodes over HTTPS
	// with this node's certificate (see node.RaftTLS).
	TLS *TLS
}

// Server is a running node with its API.
type Server struct {
	Node    *node.Node
	api     *transport.Server
	apiAddr string
	served  chan error

	closeOnce sync.Once
	closeErr  error
}

// Start opens the data dir, starts Raft and serves the API. It returns once
// both listen; it does not wait for leadership (see WaitLeader).
func Start(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	apiOpts := transport.Options{Logger: cfg.Logger, Gatherer: reg, Registerer: reg, Pprof: cfg.Pprof,
		Auth: cfg.Auth, RateLimit: cfg.APIRateLimit}
	if err := apiOpts.Validate(); err != nil {
		return nil, err
	}

	// The API listener is bound first so the node can hand out its real
	// address (a leader hint, gossip metadata) even when the port was 0.
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on API address %s: %w", cfg.APIAddr, err)
	}
	apiAddr := cfg.APIAdvertise
	if apiAddr == "" {
		apiAddr = advertisedAPIAddr(ln.Addr().String(), cfg.RaftAdvertise, cfg.RaftAddr)
	}
	var apiTLS, peerTLS *tls.Config
	var raftTLS *node.RaftTLS
	if cfg.TLS != nil {
		apiTLS, peerTLS, raftTLS = cfg.TLS.API, cfg.TLS.Peer, cfg.TLS.Raft
	}
	n, err := node.New(node.Config{
		NodeID:            cfg.NodeID,
		DataDir:           cfg.DataDir,
		RaftAddr:          cfg.RaftAddr,
		RaftAdvertise:     cfg.RaftAdvertise,
		APIAddr:           apiAddr,
		Bootstrap:         cfg.Bootstrap,
		GossipAddr:        cfg.GossipAddr,
		GossipAdvertise:   cfg.GossipAdvertise,
		GossipKey:         cfg.GossipKey,
		GossipLabel:       cfg.GossipLabel,
		Join:              cfg.Join,
		BootstrapExpect:   cfg.BootstrapExpect,
		DeadServerGrace:   cfg.DeadServerGrace,
		ReconcileInterval: cfg.ReconcileInterval,
		FastGossip:        cfg.FastGossip,
		Peers:             transport.NewPeerClient(cfg.ClusterToken, peerTLS),
		RaftTLS:           raftTLS,
		Version:           cfg.Version,
		SnapshotThreshold: cfg.SnapshotThreshold,
		SnapshotInterval:  cfg.SnapshotInterval,
		TrailingLogs:      cfg.TrailingLogs,
		LogStore:          cfg.LogStore,
		RaftLogLevel:      cfg.RaftLogLevel,
		ElectionTimeout:   cfg.ElectionTimeout,
		Clock:             cfg.Clock,
		SigningKey:        cfg.SigningKey,
		ReceiptRetention:  cfg.ReceiptRetention,
		NoReceipts:        cfg.NoReceipts,
		Logger:            cfg.Logger,
		Registerer:        reg,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	if a, ok := cfg.Auth.(*auth.Authenticator); ok && a.APIKeys == nil {
		// API keys live in this node's state machine: set before serving.
		a.APIKeys = transport.APIKeyLookup(n)
	}
	api := transport.NewServer(ln, transport.NewHandler(n, apiOpts), apiTLS)
	s := &Server{Node: n, api: api, apiAddr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { s.served <- api.Serve() }()
	return s, nil
}

// TLS are the TLS configurations of a node (see auth.TLSFiles).
type TLS struct {
	API  *tls.Config
	Raft *node.RaftTLS
	Peer *tls.Config
}

// APIAddr is the address the API listens on.
func (s *Server) APIAddr() string { return s.apiAddr }

// WaitLeader waits until this node is a leader ready to serve.
func (s *Server) WaitLeader(ctx context.Context) error { return s.Node.WaitLeader(ctx) }

// Close drains the API (in-flight requests finish, up to ctx) and stops the
// node.
// Calling it again returns the first result.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		apiErr := s.api.Shutdown(ctx)
		if err := <-s.served; err != nil && apiErr == nil {
			apiErr = err
		}
		s.closeErr = errors.Join(apiErr, s.Node.Shutdown())
	})
	return s.closeErr
}

// advertisedAPIAddr is the API address other nodes and clients are told when
// none was given: the bound one, or, when it is a wildcard ("[::]:7070"), the
// Raft address's host with the API port, or this host's name.
func advertisedAPIAddr(bound, raftAdvertise, raftAddr string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return bound
	}
	for _, r := range []string{raftAdvertise, raftAddr} {
		if h, _, err := net.SplitHostPort(r); err == nil && h != "" {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				return net.JoinHostPort(h, port)
			}
		}
	}
	if name, err := os.Hostname(); err == nil {
		return net.JoinHostPort(name, port)
	}
	return bound
}
