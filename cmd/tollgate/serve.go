package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/auth"
	"github.com/tollgate/tollgate/embed"
	"github.com/tollgate/tollgate/node"
	"github.com/tollgate/tollgate/receipt"
	"github.com/tollgate/tollgate/transport"
)

type serveFlags struct {
	dev               bool
	signingKey        string
	receiptRetention  time.Duration
	noReceipts        bool
	pprof             bool
	nodeID            string
	dataDir           string
	apiAddr           string
	raftAddr          string
	apiAdvertise      string
	raftAdvertise     string
	bootstrap         bool
	gossipAddr        string
	gossipAdvertise   string
	gossipKeyFile     string
	gossipLabel       string
	join              []string
	bootstrapExpect   int
	deadServerGrace   time.Duration
	electionTimeout   time.Duration
	fastMembership    bool
	clockOffset       time.Duration
	snapshotThreshold uint64
	snapshotInterval  time.Duration
	trailingLogs      uint64
	logStore          string
	logLevel          string
	logFormat         string
	shutdownTimeout   time.Duration
	insecure          bool
	jwtKeyFiles       []string
	jwksURL           string
	jwtIssuer         string
	jwtAudience       string
	jwksRefresh       time.Duration
	jwtSkew           time.Duration
	clusterTokenFile  string
	apiRateLimit      int64
	apiRateBurst      int64
	tlsCert           string
	tlsKey            string
	tlsCA             string
}

func newServeCommand() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a tollgate node",
		Long: `Run a tollgate node: the Raft log and snapshots under --data-dir, the API
(Connect, gRPC, gRPC-Web and JSON over HTTP/1.1 and h2c) on --api-addr, and
Raft on --raft-addr.

With --dev: a single node named "dev" with data in ./data, API on :7070 and
Raft on 127.0.0.1:7071, no authentication. It prints where it listens.

Authentication: outside --dev a node refuses to start unless it can verify
callers or is told --insecure. Callers send 'Authorization: Bearer <JWT>';
tokens are verified against public keys (--auth-jwt-key-file: JWKS, JWK or
PEM; --auth-jwks-url), RS256, ES256 or EdDSA, with exp required and nbf, iss
(--auth-jwt-issuer) and aud (--auth-jwt-audience) checked. The token's
"role" claim is admin, tenant-admin, spender or reader, and its "tenant"
claim the only tenant it may touch (admin: every tenant). Servers call each
other's APIs with the cluster token (--cluster-token-file, the same on every
node; 'tollgate keygen --cluster-token'). Each credential may make
--api-rate-limit calls per second on each node. See docs/security.md.

Clusters: nodes find each other through a gossip pool (--gossip-addr, --join).
Start a fresh cluster with --bootstrap-expect N on each of its first N
servers: they bootstrap together once all N see each other. A server started
later with --join is added by the leader as a non-voter and promoted to voter
once it has caught up. The leader removes a server that stays out of the pool
longer than --dead-server-grace, but never when that would leave the remaining
voters without a live majority.

A node whose data directory holds no Raft state, started without --join and
--bootstrap-expect, bootstraps a new one-voter cluster (unless
--bootstrap=false). The API answers /healthz, /metrics (Prometheus), gRPC
health and reflection.`,
		Example: `  tollgate serve --dev
  tollgate serve --node-id n1 --data-dir /var/lib/tollgate --api-addr :7070 --raft-addr 10.0.0.1:7071 \
    --auth-jwks-url https://idp.example/jwks.json --auth-jwt-issuer https://idp.example \
    --auth-jwt-audience tollgate --cluster-token-file cluster.token

  # three servers on one host, no authentication
  tollgate serve --insecure --node-id n1 --data-dir d1 --api-addr 127.0.0.1:7070 --raft-addr 127.0.0.1:7071 \
    --gossip-addr 127.0.0.1:7072 --bootstrap-expect 3 --join 127.0.0.1:7172,127.0.0.1:7272
  tollgate serve --insecure --node-id n2 --data-dir d2 --api-addr 127.0.0.1:7170 --raft-addr 127.0.0.1:7171 \
    --gossip-addr 127.0.0.1:7172 --bootstrap-expect 3 --join 127.0.0.1:7072
  tollgate serve --insecure --node-id n3 --data-dir d3 --api-addr 127.0.0.1:7270 --raft-addr 127.0.0.1:7271 \
    --gossip-addr 127.0.0.1:7272 --bootstrap-expect 3 --join 127.0.0.1:7072`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd, f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.dev, "dev", false, "single node for development: data in ./data, API :7070, no auth")
	fl.BoolVar(&f.insecure, "insecure", false, "run without authentication: anyone who reaches the API may do anything (tests, or behind a trusted proxy)")
	fl.StringSliceVar(&f.jwtKeyFiles, "auth-jwt-key-file", nil, "file of public keys that sign bearer tokens: a JWKS, a JWK or PEM (repeatable); reloaded every --auth-jwks-refresh")
	fl.StringVar(&f.jwksURL, "auth-jwks-url", "", "URL of a JWKS with the public keys that sign bearer tokens; fetched at start and every --auth-jwks-refresh")
	fl.StringVar(&f.jwtIssuer, "auth-jwt-issuer", "", "the iss every token must carry (required with JWT keys)")
	fl.StringVar(&f.jwtAudience, "auth-jwt-audience", "", "the aud every token must name (required with JWT keys)")
	fl.DurationVar(&f.jwksRefresh, "auth-jwks-refresh", 5*time.Minute, "how often the JWT keys are reloaded (a token with an unknown key id also reloads them, at most every 10s)")
	fl.DurationVar(&f.jwtSkew, "auth-jwt-skew", 30*time.Second, "clock skew allowed on exp, nbf and iat")
	fl.StringVar(&f.clusterTokenFile, "cluster-token-file", "", "file holding the base64 of a 32-byte token servers show each other's APIs ('tollgate keygen --cluster-token'); required with authentication; the same on every node")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "this server's certificate (PEM, role server, naming the hosts peers and clients dial; 'tollgate tls cert'): turns on HTTPS for the API and mutual TLS for Raft and calls between servers")
	fl.StringVar(&f.tlsKey, "tls-key", "", "key of --tls-cert (PEM)")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "the cluster CA (PEM): Raft peers must present a server certificate it signed; API client certificates are checked against it")
	fl.Int64Var(&f.apiRateLimit, "api-rate-limit", 1000, "calls per second each authenticated credential may make to this node (0: no limit)")
	fl.Int64Var(&f.apiRateBurst, "api-rate-burst", 2000, "burst of --api-rate-limit")
	fl.StringVar(&f.nodeID, "node-id", "", "this node's stable Raft ID (required unless --dev)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, stable store and snapshots (required unless --dev)")
	fl.StringVar(&f.apiAddr, "api-addr", ":7070", "HOST:PORT the API listens on")
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7071", "HOST:PORT Raft listens on")
	fl.StringVar(&f.apiAdvertise, "api-advertise", "", "API address other nodes and clients use (default: --api-addr)")
	fl.StringVar(&f.raftAdvertise, "raft-advertise", "", "Raft address peers dial (default: --raft-addr)")
	fl.BoolVar(&f.bootstrap, "bootstrap", true, "bootstrap a one-voter cluster if the data dir is fresh and neither --join nor --bootstrap-expect is given")
	fl.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7072", "HOST:PORT the gossip pool (memberlist, TCP and UDP) listens on; empty turns gossip off")
	fl.StringVar(&f.gossipAdvertise, "gossip-advertise", "", "gossip address other members use (default: --gossip-addr)")
	fl.StringVar(&f.gossipKeyFile, "gossip-key-file", "", "file holding the base64 of a 32-byte key that encrypts and authenticates gossip (make one with 'tollgate keygen --gossip'); every member needs the same key")
	fl.StringVar(&f.gossipLabel, "gossip-label", "", "label on every gossip packet; members with another label are ignored (keeps two clusters on one network apart)")
	fl.StringSliceVar(&f.join, "join", nil, "gossip addresses (HOST:PORT, comma separated) of members to join; retried until one answers")
	fl.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "bootstrap a fresh cluster once this many fresh servers (with the same setting) are in the pool")
	fl.DurationVar(&f.deadServerGrace, "dead-server-grace", 30*time.Second, "how long a server may be missing from the pool before the leader removes it from Raft")
	fl.DurationVar(&f.electionTimeout, "election-timeout", time.Second, "how long a follower waits without a leader before an election; the leader lease is half of it")
	fl.BoolVar(&f.fastMembership, "fast-membership", false, "tests on one host: detect dead gossip members in about a second and reconcile every 200ms")
	fl.MarkHidden("fast-membership")
	fl.DurationVar(&f.clockOffset, "clock-offset", 0, "tests only: shift this node's clock (it stamps log entries while it leads)")
	fl.MarkHidden("clock-offset")
	fl.Uint64Var(&f.snapshotThreshold, "snapshot-threshold", 8192, "log entries between snapshots")
	fl.Uint64Var(&f.trailingLogs, "trailing-logs", 10240, "log entries kept after a snapshot, so a briefly lagging follower catches up without a snapshot install")
	fl.StringVar(&f.logStore, "log-store", "bolt", "Raft log store of a NEW data dir: bolt (raft-boltdb) or wal (raft-wal v0.4.0: faster, but UNSAFE — a node restarted after a log suffix truncation cannot read its log, hashicorp/raft-wal#31; benchmarks only); an existing data dir keeps the store it has")
	fl.DurationVar(&f.snapshotInterval, "snapshot-interval", 30*time.Second, "how often to check --snapshot-threshold")
	fl.StringVar(&f.signingKey, "signing-key", "", "PEM file with the Ed25519 key a new cluster signs receipts with (from 'tollgate keygen'); default: the first leader generates one. Only used while the cluster has no key")
	fl.DurationVar(&f.receiptRetention, "receipt-retention", 0, "how long (in log time) this node keeps receipts and checkpoints; 0 keeps them forever")
	fl.BoolVar(&f.noReceipts, "bench-no-receipts", false, "benchmarks only: decide without receipts, to measure what they cost (every node must be started the same way)")
	fl.MarkHidden("bench-no-receipts")
	fl.BoolVar(&f.pprof, "pprof", false, "serve Go's profiler (net/http/pprof) under /debug/pprof/ on the API port; for profiling, never on an untrusted network")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may finish on SIGTERM")
	return cmd
}

func runServe(cmd *cobra.Command, f *serveFlags) error {
	logger, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if f.dev {
		if !cmd.Flags().Changed("node-id") {
			f.nodeID = "dev"
		}
		if !cmd.Flags().Changed("data-dir") {
			f.dataDir = "./data"
		}
	}
	if f.nodeID == "" || f.dataDir == "" {
		return fmt.Errorf("--node-id and --data-dir are required (or use --dev)")
	}
	if f.snapshotThreshold == 0 {
		return fmt.Errorf("--snapshot-threshold must be at least 1")
	}
	if f.logStore != "wal" && f.logStore != "bolt" {
		return fmt.Errorf("--log-store must be wal or bolt, not %q", f.logStore)
	}
	if f.trailingLogs == 0 {
		return fmt.Errorf("--trailing-logs must be at least 1")
	}
	if f.bootstrapExpect < 0 || f.bootstrapExpect > 9 {
		return fmt.Errorf("--bootstrap-expect must be between 0 and 9, not %d", f.bootstrapExpect)
	}
	if (len(f.join) > 0 || f.bootstrapExpect > 1) && f.gossipAddr == "" {
		return fmt.Errorf("--join and --bootstrap-expect need --gossip-addr")
	}
	if f.electionTimeout < 50*time.Millisecond || f.electionTimeout > time.Minute {
		return fmt.Errorf("--election-timeout must be between 50ms and 1m")
	}
	if f.deadServerGrace < time.Second {
		return fmt.Errorf("--dead-server-grace must be at least 1s")
	}
	if f.snapshotInterval < 10*time.Millisecond {
		return fmt.Errorf("--snapshot-interval must be at least 10ms")
	}
	if f.receiptRetention < 0 || (f.receiptRetention > 0 && f.receiptRetention < time.Hour) {
		return fmt.Errorf("--receipt-retention must be 0 (forever) or at least 1h, not %s", f.receiptRetention)
	}
	var gossipKey []byte
	if f.gossipKeyFile != "" {
		raw, err := os.ReadFile(f.gossipKeyFile)
		if err != nil {
			return fmt.Errorf("--gossip-key-file: %w", err)
		}
		if gossipKey, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw))); err != nil || len(gossipKey) != 32 {
			return fmt.Errorf("--gossip-key-file %s: want the base64 of 32 bytes (tollgate keygen --gossip)", f.gossipKeyFile)
		}
	}
	var tlsFiles *auth.TLSFiles
	if f.tlsCert != "" || f.tlsKey != "" || f.tlsCA != "" {
		if f.tlsCert == "" || f.tlsKey == "" || f.tlsCA == "" {
			return fmt.Errorf("--tls-cert, --tls-key and --tls-ca go together")
		}
		if tlsFiles, err = auth.LoadTLS(f.tlsCert, f.tlsKey, f.tlsCA); err != nil {
			return err
		}
	}
	authn, clusterToken, err := serveAuth(f, logger, tlsFiles != nil)
	if err != nil {
		return err
	}
	if authn != nil && authn.JWT != nil {
		defer authn.JWT.Close()
	}
	var signingKey ed25519.PrivateKey
	if f.signingKey != "" {
		pemBytes, err := os.ReadFile(f.signingKey)
		if err != nil {
			return fmt.Errorf("--signing-key: %w", err)
		}
		if signingKey, err = receipt.ParsePrivateKey(pemBytes); err != nil {
			return fmt.Errorf("--signing-key %s: %w", f.signingKey, err)
		}
	}
	// Catch signals before anything starts, so a SIGTERM during start-up is
	// a clean shutdown too.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := embed.Config{
		NodeID:            f.nodeID,
		DataDir:           f.dataDir,
		APIAddr:           f.apiAddr,
		RaftAddr:          f.raftAddr,
		APIAdvertise:      f.apiAdvertise,
		RaftAdvertise:     f.raftAdvertise,
		Bootstrap:         f.bootstrap,
		GossipAddr:        f.gossipAddr,
		GossipAdvertise:   f.gossipAdvertise,
		GossipKey:         gossipKey,
		GossipLabel:       f.gossipLabel,
		Join:              f.join,
		BootstrapExpect:   f.bootstrapExpect,
		DeadServerGrace:   f.deadServerGrace,
		ElectionTimeout:   f.electionTimeout,
		FastGossip:        f.fastMembership,
		Clock:             offsetClock(f.clockOffset),
		SigningKey:        signingKey,
		ReceiptRetention:  f.receiptRetention,
		NoReceipts:        f.noReceipts,
		Pprof:             f.pprof,
		ClusterToken:      clusterToken,
		APIRateLimit:      transport.RateLimit{PerSecond: f.apiRateLimit, Burst: f.apiRateBurst},
		ReconcileInterval: reconcileInterval(f.fastMembership),
		SnapshotThreshold: f.snapshotThreshold,
		SnapshotInterval:  f.snapshotInterval,
		TrailingLogs:      f.trailingLogs,
		LogStore:          f.logStore,
		RaftLogLevel:      raftLogLevel(f.logLevel),
		Version:           version,
		Logger:            logger,
	}
	if authn != nil {
		cfg.Auth = authn // a nil *auth.Authenticator must not become a non-nil interface
	}
	if tlsFiles != nil {
		cfg.TLS = &embed.TLS{API: tlsFiles.APIServerConfig(), Peer: tlsFiles.PeerClientConfig(),
			Raft: &node.RaftTLS{Server: tlsFiles.RaftServerConfig(), Client: tlsFiles.PeerClientConfig()}}
	}
	s, err := embed.Start(cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if node.PlantedBug != "" {
		fmt.Fprintf(out, "WARNING: test build with the planted bug %q enabled; never run it for real\n", node.PlantedBug)
	}
	if s.Node.LogStoreKind() == "wal" {
		fmt.Fprintln(out, "WARNING: this data dir's Raft log is raft-wal v0.4.0, which cannot read its log after a restart that follows a log suffix truncation (hashicorp/raft-wal#31); use it for benchmarks only")
	}
	if f.noReceipts {
		fmt.Fprintln(out, "WARNING: receipts are off (--bench-no-receipts): decisions are not provable; for measuring their cost only")
	}
	mode := "node"
	switch {
	case f.dev && authn == nil:
		mode = "development node (single node, NO AUTHENTICATION)"
	case f.dev:
		mode = "development node (single node)"
	}
	if authn == nil {
		fmt.Fprintf(out, "WARNING: AUTHENTICATION IS OFF (%s): anyone who reaches %s may read and change every tenant and the cluster\n",
			map[bool]string{true: "--dev", false: "--insecure"}[f.dev], displayAddr(s.APIAddr()))
	}
	fmt.Fprintf(out, "tollgate (version %s): %s %q\n", version, mode, f.nodeID)
	scheme := "http"
	if tlsFiles != nil {
		scheme = "https"
	}
	fmt.Fprintf(out, "  API   %s://%s  (Connect, gRPC, gRPC-Web, JSON; /healthz, /metrics)\n", scheme, displayAddr(s.APIAddr()))
	if tlsFiles != nil {
		fmt.Fprintf(out, "  TLS   certificate %q (role server), Raft over mutual TLS\n", tlsFiles.Leaf.Subject.CommonName)
	}
	fmt.Fprintf(out, "  Raft  %s\n", s.Node.RaftAddr())
	if g := s.Node.GossipAddr(); g != "" {
		fmt.Fprintf(out, "  Gossip %s\n", g)
	}
	fmt.Fprintf(out, "  data  %s\n", f.dataDir)
	authHint := ""
	if authn != nil {
		authHint = ` -H "authorization: Bearer $TOKEN"`
	}
	curlTarget := "localhost" + portOf(s.APIAddr())
	if tlsFiles != nil {
		curlTarget = "--cacert " + f.tlsCA + " https://" + displayAddr(s.APIAddr())
	}
	fmt.Fprintf(out, "try:  curl -s %s/tollgate.v1.ClusterService/Status -H 'content-type: application/json'%s -d '{}'\n", curlTarget, authHint)

	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := s.WaitLeader(wctx); err == nil {
			logger.Info("leader ready; serving", "node_id", f.nodeID)
		}
	}()
	<-ctx.Done()
	logger.Info("shutting down", "timeout", f.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	return s.Close(sctx)
}

// displayAddr shows a wildcard bind address as localhost, which is where a
// user on this machine reaches it.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("localhost", port) + " (all interfaces)"
	}
	return addr
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i:]
		}
	}
	return addr
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// raftLogLevel keeps Raft's routine warnings (an election at every start of a
// single node) out of the default output.
func raftLogLevel(level string) string {
	if level == "debug" {
		return "info"
	}
	return "error"
}

func reconcileInterval(fast bool) time.Duration {
	if fast {
		return 200 * time.Millisecond
	}
	return time.Second
}

// offsetClock is time.Now shifted by offset (nil: the plain clock).
func offsetClock(offset time.Duration) func() time.Time {
	if offset == 0 {
		return nil
	}
	return func() time.Time { return time.Now().Add(offset) }
}

// serveAuth builds the authenticator the flags ask for: nil when
// authentication is off (--dev without keys, or --insecure), and refuses a
// production start with neither keys nor --insecure.
func serveAuth(f *serveFlags, logger *slog.Logger, mtls bool) (*auth.Authenticator, []byte, error) {
	jwtOn := len(f.jwtKeyFiles) > 0 || f.jwksURL != ""
	var clusterToken []byte
	if f.clusterTokenFile != "" {
		raw, err := os.ReadFile(f.clusterTokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--cluster-token-file: %w", err)
		}
		if clusterToken, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw))); err != nil || len(clusterToken) != 32 {
			return nil, nil, fmt.Errorf("--cluster-token-file %s: want the base64 of 32 bytes (tollgate keygen --cluster-token)", f.clusterTokenFile)
		}
	}
	switch {
	case f.insecure && jwtOn:
		return nil, nil, fmt.Errorf("--insecure turns authentication off, but JWT keys are configured: pick one")
	case !jwtOn && (f.jwtIssuer != "" || f.jwtAudience != ""):
		return nil, nil, fmt.Errorf("--auth-jwt-issuer and --auth-jwt-audience need --auth-jwt-key-file or --auth-jwks-url")
	case !jwtOn && !f.dev && !f.insecure:
		return nil, nil, fmt.Errorf("refusing to start without authentication: give JWT keys (--auth-jwt-key-file or --auth-jwks-url, with --auth-jwt-issuer, --auth-jwt-audience and --cluster-token-file; see docs/security.md), or pass --insecure to let anyone who reaches the API do anything")
	case !jwtOn:
		// Authentication off; a cluster token still goes to peers, which
		// may have it on.
		return nil, clusterToken, nil
	case clusterToken == nil && !mtls:
		return nil, nil, fmt.Errorf("authentication needs --cluster-token-file or TLS (--tls-cert, --tls-key, --tls-ca): servers forward writes and reads to each other with one of them ('tollgate keygen --cluster-token', the same file on every node)")
	}
	if f.apiRateLimit < 0 || f.apiRateBurst < 1 && f.apiRateLimit > 0 {
		return nil, nil, fmt.Errorf("--api-rate-limit must be 0 (off) or positive, with --api-rate-burst at least 1")
	}
	v, err := auth.NewJWTVerifier(auth.JWTConfig{KeyFiles: f.jwtKeyFiles, JWKSURL: f.jwksURL, Issuer: f.jwtIssuer,
		Audience: f.jwtAudience, Refresh: f.jwksRefresh, Skew: f.jwtSkew, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	a := &auth.Authenticator{JWT: v}
	if clusterToken != nil {
		a.SetClusterToken(clusterToken)
	}
	return a, clusterToken, nil
}
