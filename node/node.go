// Package node runs one tollgate server: hashicorp/raft with raft-boltdb and a
// file snapshot store under the data directory, group commit of commands into
// log entries, and the read consistency levels.
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/fsm"
)

// Config is everything a node needs. Zero values are replaced by the defaults
// named below; nothing is left to a library default silently.
type Config struct {
	// NodeID is this server's Raft ID; stable across restarts.
	NodeID string
	// DataDir holds the Raft log and stable store (wal/ or raft.db, see
	// LogStore), snapshots/ and receipts.db.
	DataDir string
	// LogStore picks the Raft log store of a new data dir: "bolt" (default,
	// raft-boltdb: a B+tree, two fsyncs per write) or "wal"
	// (hashicorp/raft-wal v0.4.0: append-only segments, one fsync per write,
	// faster, but UNSAFE: after a log suffix truncation a restarted node
	// cannot read its log, hashicorp/raft-wal#31, fixed upstream after the
	// last release; for benchmarks only). A data dir keeps the store it was
	// created with, whatever this says.
	LogStore string
	// RaftAddr is the host:port the Raft transport binds ("127.0.0.1:0" picks
	// a port). RaftAdvertise is what peers dial; default the bound address.
	RaftAddr      string
	RaftAdvertise string
	// RaftTLS, when set, runs Raft over mutual TLS (see RaftTLS); nil is
	// plain TCP.
	RaftTLS *RaftTLS
	// APIAddr is this node's API address, handed out as a leader hint.
	APIAddr string
	// Bootstrap makes a fresh node (no Raft state on disk) bootstrap a
	// cluster with itself as the only voter, unless Join or BootstrapExpect
	// say it belongs to a cluster of several.
	Bootstrap bool
	// GossipAddr is the host:port memberlist binds ("" turns gossip off: a
	// single node). GossipAdvertise is what other members dial.
	GossipAddr      string
	GossipAdvertise string
	// GossipKey (32 bytes) encrypts and authenticates gossip (AES-256-GCM,
	// memberlist's keyring); every member must have it, and a member without
	// it is not let in. Nil: gossip in the clear.
	GossipKey []byte
	// GossipLabel is put on every gossip packet and required on every one
	// received, so two clusters on one network never merge ("" : none).
	GossipLabel string
	// Join lists gossip addresses of members to join (retried until one
	// answers).
	Join []string
	// BootstrapExpect > 1: a fresh node waits until that many fresh servers
	// with the same setting are in the gossip pool, then they bootstrap
	// together.
	BootstrapExpect int
	// DeadServerGrace is how long a server may be missing from gossip before
	// the leader removes it from Raft (default 30s).
	DeadServerGrace time.Duration
	// ReconcileInterval is how often the leader reconciles gossip with Raft
	// (default 1s).
	ReconcileInterval time.Duration
	// FastGossip tunes memberlist for loopback tests (failure detection in
	// about a second).
	FastGossip bool
	// Peers reaches other nodes' internal API (forwarding, read index,
	// progress). Nil: this node never forwards.
	Peers Peers
	// Version is gossiped to other members.
	Version string
	// Stores, when set, replace the on-disk stores and the TCP transport (the
	// in-process simulation runs Raft's in-memory ones); DataDir and
	// RaftAddr are then not needed.
	Stores *Stores
	// BootstrapVoters (id -> Raft address), when set, bootstraps a fresh node
	// with exactly these voters (all of them must be given the same map).
	BootstrapVoters map[string]string
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one (default 8192).
	SnapshotThreshold uint64
	// SnapshotInterval is how often Raft checks the threshold (default 30s).
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries are kept after a snapshot (default
	// 10240) so a lagging follower can catch up without a snapshot install.
	TrailingLogs uint64
	// ElectionTimeout is how long a follower waits without hearing from a
	// leader before it starts an election (default 1s); the leader lease is
	// half of it. Tests on loopback use less.
	ElectionTimeout time.Duration
	// RaftLogLevel is hashicorp/raft's log level: "error" (default), "warn",
	// "info", "debug" or "trace".
	RaftLogLevel string
	// ApplyTimeout bounds one entry's trip through Raft (default 10s).
	ApplyTimeout time.Duration
	// Clock returns the leader's time for stamping entries (default
	// time.Now). The state machine never reads a clock; only this does.
	Clock  func() time.Time
	Logger *slog.Logger
	// Registerer receives the node's Prometheus metrics (nil: none).
	Registerer prometheus.Registerer
	// SigningKey is the receipt signing key a leader installs when the
	// cluster has none yet (nil: the leader generates one). Rotation later is
	// an explicit command (RotateSigningKey).
	SigningKey ed25519.PrivateKey
	// ReceiptRetention is how long (in log time) this node keeps receipts in
	// receipts.db; 0 keeps them forever. With Stores set and no DataDir the
	// node keeps no receipts.
	ReceiptRetention time.Duration
	// NoReceipts turns receipts off, to measure what they cost (benchmarks
	// only; every node of the cluster must have the same setting).
	NoReceipts bool
}

const (
	// proposalQueueMax bounds proposals waiting for the batcher.
	proposalQueueMax = 8192
	// entryCommandsMax is the most commands the batcher packs into one entry.
	entryCommandsMax = 4096
	// entriesInFlightMax is how many entries may be in Raft at once; while
	// they are, new proposals accumulate into the next (larger) entry.
	entriesInFlightMax = 2
	// snapshotsRetained is how many snapshots are kept on disk.
	snapshotsRetained = 2
)

func (c *Config) setDefaults() error {
	if c.NodeID == "" {
		return errors.New("node: NodeID is required")
	}
	if c.DataDir == "" && c.Stores == nil {
		return errors.New("node: DataDir is required")
	}
	if c.RaftAddr == "" && c.Stores == nil {
		return errors.New("node: RaftAddr is required")
	}
	switch c.LogStore {
	case "":
		c.LogStore = "bolt"
	case "wal", "bolt":
	default:
		return fmt.Errorf("node: LogStore %q: want wal or bolt", c.LogStore)
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = time.Second
	}
	if c.ElectionTimeout < 50*time.Millisecond {
		return errors.New("node: ElectionTimeout must be at least 50ms")
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.DeadServerGrace == 0 {
		c.DeadServerGrace = 30 * time.Second
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = time.Second
	}
	if c.GossipKey != nil && len(c.GossipKey) != 32 {
		return fmt.Errorf("node: GossipKey is %d bytes; want 32", len(c.GossipKey))
	}
	if len(c.GossipLabel) > 255 {
		return errors.New("node: GossipLabel is longer than 255 bytes")
	}
	if c.BootstrapExpect < 0 {
		return errors.New("node: BootstrapExpect must not be negative")
	}
	if (len(c.Join) > 0 || c.BootstrapExpect > 1) && c.GossipAddr == "" {
		return errors.New("node: Join and BootstrapExpect need a GossipAddr")
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 30 * time.Second
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Node is one running tollgate server.
type Node struct {
	cfg       Config
	machine   *fsm.Machine
	raft      *raft.Raft
	transport raft.Transport
	logStore  io.Closer
	logKind   string                    // the Raft log store in use: bolt or wal
	raftPtr   atomic.Pointer[raft.Raft] // n.raft, for the log store's compaction guard
	logs      raft.LogStore             // behind Raft's cache; tests look at its range
	receipts  *receiptStore             // nil: this node keeps no receipts
	applied   *appliedIndex
	metrics   *metrics
	log       *slog.Logger
	gossip    *gossip
	// gossipReady is gossip once started, for Raft's transport goroutines.
	gossipReady atomic.Pointer[gossip]
	peers       Peers
	members     *membership

	proposals chan *proposal
	inflight  chan struct{} // semaphore of entriesInFlightMax
	stopping  chan struct{}
	wg        sync.WaitGroup

	mu        sync.Mutex
	readyTerm uint64            // term in which this leader's barrier committed
	lastStamp int64             // last NowMs handed out (monotonic)
	apiAddrs  map[string]string // raft ID -> API address, for leader hints
	closeOnce sync.Once
}

// New opens (or creates) the node's data directory and starts Raft.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.Stores == nil {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("node: data dir: %w", err)
		}
	}
	n := &Node{
		cfg:       cfg,
		machine:   fsm.New(),
		applied:   newAppliedIndex(),
		metrics:   newMetrics(cfg.Registerer),
		log:       cfg.Logger,
		proposals: make(chan *proposal, proposalQueueMax),
		inflight:  make(chan struct{}, entriesInFlightMax),
		stopping:  make(chan struct{}),
		apiAddrs:  map[string]string{cfg.NodeID: cfg.APIAddr},
		peers:     cfg.Peers,
		members:   newMembership(),
	}
	if cfg.NoReceipts {
		n.machine.DisableReceipts()
	}
	if cfg.DataDir != "" && !cfg.NoReceipts {
		rs, err := openReceiptStore(cfg.DataDir, cfg.ReceiptRetention, func(err error) {
			n.metrics.receiptErrors.Inc()
			n.log.Error("receipt store write failed", "err", err)
		})
		if err != nil {
			return nil, err
		}
		n.receipts = rs
	}
	if err := n.startRaft(); err != nil {
		n.closeStores()
		return nil, err
	}
	if cfg.GossipAddr != "" {
		if err := n.startGossip(); err != nil {
			n.raft.Shutdown().Error()
			if c, ok := n.transport.(io.Closer); ok {
				c.Close()
			}
			n.closeStores()
			return nil, err
		}
	}
	n.registerGauges(cfg.Registerer)
	n.wg.Add(2)
	go n.runBatcher()
	go n.watchLeadership()
	if n.gossip != nil {
		n.wg.Add(2)
		go n.runMembership()
		go n.joinPool()
	}
	if n.receipts != nil && n.peers != nil {
		n.wg.Add(1)
		go n.runReceiptRepair()
	}
	return n, nil
}

func (n *Node) startGossip() error {
	incarnation, err := loadIncarnation(n.cfg.DataDir)
	if err != nil {
		return err
	}
	self := gossipMeta{
		Incarnation: incarnation,
		ID:          n.cfg.NodeID,
		RaftAddr:    string(n.transport.LocalAddr()),
		APIAddr:     n.cfg.APIAddr,
		Version:     n.cfg.Version,
		HasState:    n.raft.LastIndex() > 0,
		Expect:      n.cfg.BootstrapExpect,
	}
	n.gossip, err = startGossip(n.cfg.GossipAddr, n.cfg.GossipAdvertise, self, hclogWriter(n.cfg.RaftLogLevel),
		func(m gossipMeta) { n.SetAPIAddr(m.ID, m.APIAddr) }, n.cfg.FastGossip, gossipSecurity{key: n.cfg.GossipKey, label: n.cfg.GossipLabel})
	if err == nil {
		n.gossipReady.Store(n.gossip)
	}
	return err
}

// undialable is an address Raft cannot reach (connecting to port 0 fails at
// once): what a server is dialled at while gossip does not vouch for it.
const undialable = raft.ServerAddress("127.0.0.1:0")

// raftAddresses tells Raft where a server is right now, from what that
// server announces in gossip, instead of the address stored in the Raft
// configuration. Stored addresses go stale when a node comes back at another
// address (containers restarted in another order swap IPs); dialling a stale
// one can reach a different server — even the candidate itself, whose own
// vote would then count twice. So with gossip on, Raft only dials addresses
// that an alive member announced under its own name (memberlist probes check
// the name), and nothing while gossip does not know the server.
type raftAddresses struct{ n *Node }

func (r raftAddresses) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if r.n.cfg.GossipAddr == "" {
		return "", errGossipOff // single node: use the configured address
	}
	g := r.n.gossipReady.Load()
	if g == nil {
		return undialable, nil
	}
	if addr, ok := g.raftAddr(string(id)); ok {
		return raft.ServerAddress(addr), nil
	}
	return undialable, nil
}

var errGossipOff = errors.New("gossip is off; using the configured address")

// joinPool contacts the --join members (and the pool this node saw last
// time), retrying with backoff until the pool holds another alive member:
// memberlist counts reaching this node itself as a successful join, and nodes
// starting together may otherwise each end in a pool of one.
func (n *Node) joinPool() {
	defer n.wg.Done()
	addrs := n.otherJoinAddrs(append(append([]string(nil), n.cfg.Join...), loadKnownPeers(n.cfg.DataDir)...))
	if len(addrs) == 0 {
		return
	}
	backoff := 100 * time.Millisecond
	for {
		_, err := n.gossip.join(addrs)
		if n.gossip.othersAlive(n.cfg.NodeID) > 0 {
			n.log.Info("joined the gossip pool", "members", n.gossip.othersAlive(n.cfg.NodeID)+1)
			return
		}
		n.log.Warn("no other member in the gossip pool yet; retrying", "join", addrs, "err", err, "in", backoff)
		select {
		case <-n.stopping:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// otherJoinAddrs drops this node's own gossip address from a join list.
func (n *Node) otherJoinAddrs(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if a != n.cfg.GossipAddr && a != n.cfg.GossipAdvertise {
			out = append(out, a)
		}
	}
	return out
}

// GossipAddr is the address the gossip pool listens on ("" when off).
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	return n.gossip.addr()
}

func (n *Node) startRaft() error {
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclogLevel(n.cfg.RaftLogLevel), Output: os.Stderr})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.ProtocolVersion = raft.ProtocolVersionMax
	// Timeouts: a follower starts an election after ElectionTimeout (1s by
	// default) without a leader; a leader steps down when it cannot reach a
	// quorum for half of that, which bounds how long a deposed leader may
	// serve LEADER reads.
	rc.HeartbeatTimeout = n.cfg.ElectionTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.ElectionTimeout / 2
	// CommitTimeout: heartbeat cadence when idle, so followers learn the
	// commit index promptly.
	rc.CommitTimeout = min(50*time.Millisecond, n.cfg.ElectionTimeout/4)
	// Up to 256 entries per AppendEntries, and the apply channel buffered to
	// that size so Raft writes a whole batch with one fsync.
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	// Restore the newest snapshot on start, then replay the log after it.
	rc.NoSnapshotRestoreOnStart = false
	rc.Logger = hlog
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("node: raft config: %w", err)
	}

	logs, stable, snaps, err := n.openStores(hlog)
	if err != nil {
		return err
	}
	n.logs = logs
	hasState, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return err
	}
	if !hasState && len(n.cfg.BootstrapVoters) > 0 {
		// Before NewRaft: once Raft runs, a peer's vote request could give
		// this node state and make a later bootstrap fail.
		var boot raft.Configuration
		for id, addr := range n.cfg.BootstrapVoters {
			boot.Servers = append(boot.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
		}
		sort.Slice(boot.Servers, func(i, j int) bool { return boot.Servers[i].ID < boot.Servers[j].ID })
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, n.transport, boot); err != nil {
			return fmt.Errorf("node: bootstrap: %w", err)
		}
	}
	f := &raftFSM{machine: n.machine, applied: n.applied, metrics: n.metrics, receipts: n.receipts, log: n.log}
	n.raft, err = raft.NewRaft(rc, f, logs, stable, snaps, n.transport)
	if err == nil {
		n.raftPtr.Store(n.raft)
	}
	if err != nil {
		return fmt.Errorf("node: start raft: %w", err)
	}
	// A node with nothing to join but itself (--bootstrap-expect 1, or a
	// --join list naming only its own gossip address) is a cluster of one.
	single := len(n.otherJoinAddrs(n.cfg.Join)) == 0 && n.cfg.BootstrapExpect <= 1
	if !hasState && n.cfg.Bootstrap && single {
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(n.cfg.NodeID),
			Address:  n.transport.LocalAddr(),
		}}}
		if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
			return fmt.Errorf("node: bootstrap: %w", err)
		}
		n.log.Info("bootstrapped a new cluster", "node_id", n.cfg.NodeID, "raft_addr", n.transport.LocalAddr())
	}
	return nil
}

// Stores replace the on-disk stores and the TCP transport (see Config.Stores).
type Stores struct {
	Log       raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore
	Transport raft.Transport
}

// raftApplied is Raft's own applied index, 0 before Raft runs. It is not
// the state machine's: Raft also counts entries it never hands the state
// machine (configuration changes, no-ops), and a snapshot install sets it
// before the compaction that follows.
func (n *Node) raftApplied() uint64 {
	if r := n.raftPtr.Load(); r != nil {
		return r.AppliedIndex()
	}
	return 0
}

// LogStoreKind is the Raft log store this node uses ("bolt" or "wal"; ""
// for stores given in Config.Stores).
func (n *Node) LogStoreKind() string { return n.logKind }

// logStack is the Raft log as hashicorp/raft sees it: the store, counted
// and guarded (countingLogStore), under a 512-entry cache; a store that
// refuses gaps (the WAL) also gets gapResetLog on top, and nothing in the
// stack says it is a raft.MonotonicLogStore (see gapResetLog for why).
func logStack(store raft.LogStore, observe func(float64), lastApplied func() uint64, hlog hclog.Logger) (raft.LogStore, error) {
	m, ok := store.(raft.MonotonicLogStore)
	gapless := ok && m.IsMonotonic()
	cache, err := raft.NewLogCache(512, &countingLogStore{LogStore: store, observe: observe, lastApplied: lastApplied, gapless: gapless})
	if err != nil {
		return nil, err
	}
	if !gapless {
		return cache, nil
	}
	return &gapResetLog{LogStore: cache, logger: hlog.Named("log")}, nil
}

// openStores opens bbolt, the file snapshot store and the TCP transport
// under the data dir, or takes the configured Stores.
func (n *Node) openStores(hlog hclog.Logger) (raft.LogStore, raft.StableStore, raft.SnapshotStore, error) {
	if st := n.cfg.Stores; st != nil {
		n.transport = st.Transport
		logs, err := logStack(st.Log, n.metrics.storeBatches.Observe, n.raftApplied, hlog)
		return logs, st.Stable, st.Snapshots, err
	}
	store, closer, err := openLogStore(n.cfg.DataDir, n.cfg.LogStore, hlog)
	if err != nil {
		return nil, nil, nil, err
	}
	n.logStore = closer
	n.logKind = "bolt"
	if _, isWAL := store.(raft.MonotonicLogStore); isWAL {
		n.logKind = "wal"
	}
	logs, err := logStack(store, n.metrics.storeBatches.Observe, n.raftApplied, hlog)
	if err != nil {
		return nil, nil, nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, snapshotsRetained, hlog)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("node: snapshot store: %w", err)
	}
	var advertise net.Addr
	if n.cfg.RaftAdvertise != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", n.cfg.RaftAdvertise); err != nil {
			return nil, nil, nil, fmt.Errorf("node: raft advertise address: %w", err)
		}
	}
	tcfg := &raft.NetworkTransportConfig{
		ServerAddressProvider: raftAddresses{n},
		Logger:                hlog,
		MaxPool:               3,
		MaxRPCsInFlight:       2,
		// I/O deadline of one Raft RPC (and the dial timeout): short enough
		// that a shutdown waiting on a vanished peer ends promptly; snapshot
		// installs scale it with their size.
		Timeout: 3 * time.Second,
	}
	if n.cfg.RaftTLS != nil {
		var stream *tlsStreamLayer
		if stream, err = newTLSStreamLayer(n.cfg.RaftAddr, advertise, n.cfg.RaftTLS); err == nil {
			tcfg.Stream = stream
			n.transport = raft.NewNetworkTransportWithConfig(tcfg)
		}
	} else {
		n.transport, err = raft.NewTCPTransportWithConfig(n.cfg.RaftAddr, advertise, tcfg)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("node: raft transport on %s: %w", n.cfg.RaftAddr, err)
	}
	return logs, store, snaps, nil
}

// logAndStable is what both log stores are: Raft's log and its stable store
// (term, vote) in one.
type logAndStable interface {
	raft.LogStore
	raft.StableStore
}

// openLogStore opens the data dir's Raft log: the store it already holds
// (raft.db is bolt, wal/ is the WAL), or for a new dir the configured kind.
func openLogStore(dir, kind string, hlog hclog.Logger) (logAndStable, io.Closer, error) {
	boltPath, walDir := filepath.Join(dir, "raft.db"), filepath.Join(dir, "wal")
	hasBolt, hasWAL := exists(boltPath), exists(walDir)
	switch {
	case hasBolt && hasWAL:
		return nil, nil, fmt.Errorf("node: %s holds both raft.db and wal/; one data dir has one Raft log (move the one you did not mean aside)", dir)
	case hasBolt:
		kind = "bolt"
	case hasWAL:
		kind = "wal"
	}
	switch kind {
	case "bolt":
		store, err := raftboltdb.New(raftboltdb.Options{Path: boltPath})
		if err != nil {
			return nil, nil, fmt.Errorf("node: open raft.db: %w", err)
		}
		return store, store, nil
	case "wal":
		if err := os.MkdirAll(walDir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("node: open wal: %w", err)
		}
		// The WAL does not close a meta store it opened itself (its bbolt
		// file lock would outlive Close and block a restart in the same
		// process), so it gets one we close.
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(walDir, wal.WithLogger(hlog.Named("wal")), wal.WithMetaStore(meta))
		if err != nil {
			meta.Close()
			return nil, nil, fmt.Errorf("node: open wal: %w", err)
		}
		return w, closers{w, meta}, nil
	}
	return nil, nil, fmt.Errorf("node: log store %q: want wal or bolt", kind)
}

// closers close in order, returning the first error.
type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// RaftAddr is the address the Raft transport listens on.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// Machine exposes the state machine (for tests and tools).
func (n *Node) Machine() *fsm.Machine { return n.machine }

// Shutdown stops the batcher and Raft and closes the stores. Proposals still
// waiting get ErrShutdown; entries already in Raft finish or fail with
// ErrUnknownOutcome.
func (n *Node) Shutdown() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.stopping)
		n.wg.Wait()
		if n.gossip != nil {
			// Not a graceful leave: a restart should not look like a
			// departure. Peers see this node as dead until it is back.
			n.gossip.shutdown()
		}
		err = n.raft.Shutdown().Error()
		if c, ok := n.transport.(io.Closer); ok {
			if cerr := c.Close(); err == nil {
				err = cerr
			}
		}
		n.closeStores()
	})
	return err
}

func (n *Node) closeStores() {
	if n.logStore != nil {
		n.logStore.Close()
	}
	if n.receipts != nil {
		n.receipts.close()
	}
}

// watchLeadership commits a barrier entry whenever this node becomes leader,
// and only then marks the term ready for linearizable and leader reads: the
// entry proves the leader has every committed entry of earlier terms applied.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stopping:
			return
		case isLeader := <-n.raft.LeaderCh():
			if !isLeader {
				continue
			}
			term := n.raft.CurrentTerm()
			if planted("no-barrier") {
				n.mu.Lock()
				n.readyTerm = term
				n.mu.Unlock()
				n.ensureSigningKey()
				continue
			}
			// Our own no-op command (not raft.Barrier) so the state machine
			// sees the entry and the applied index reaches it. A cluster
			// without a receipt signing key gets its first one in the same
			// entry, so a ready leader can always decide.
			cmds := []fsm.Command{&fsm.Noop{}}
			if rot := n.firstKeyCommand(); rot != nil {
				cmds = append(cmds, rot)
			}
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			_, _, err := n.Propose(ctx, cmds...)
			cancel()
			if err != nil {
				n.log.Warn("leader barrier failed", "term", term, "err", err)
				continue
			}
			n.mu.Lock()
			if n.raft.CurrentTerm() == term && n.raft.State() == raft.Leader {
				n.readyTerm = term
			}
			n.mu.Unlock()
			n.log.Info("leader ready", "node_id", n.cfg.NodeID, "term", term)
		}
	}
}

// notLeader builds the error with the current leader hint.
func (n *Node) notLeader() error {
	_, id := n.raft.LeaderWithID()
	n.mu.Lock()
	defer n.mu.Unlock()
	return &NotLeaderError{LeaderID: string(id), LeaderAPIAddr: n.apiAddrs[string(id)]}
}

// SetAPIAddr records a peer's API address for leader hints.
func (n *Node) SetAPIAddr(nodeID, apiAddr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.apiAddrs[nodeID] = apiAddr
}

// WaitLeader blocks until this node is a ready leader (for tests and dev
// start-up) or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		if n.isReadyLeader() {
			return nil
		}
		_, changed := n.applied.get()
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: not leader: %w", n.cfg.NodeID, ctx.Err())
		case <-changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *Node) isReadyLeader() bool {
	if n.raft.State() != raft.Leader {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readyTerm == n.raft.CurrentTerm()
}

func (n *Node) registerGauges(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counts := func(pick func(fsm.Counts) int) func() float64 {
		return func() float64 {
			var c fsm.Counts
			n.machine.Read(0, func(v fsm.View) error { c = v.Counts(); return nil })
			return float64(pick(c))
		}
	}
	reg.MustRegister(
		gauge("tollgate_raft_is_leader", "1 if this node is the Raft leader.", func() float64 {
			if n.raft.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("tollgate_raft_term", "Current Raft term.", func() float64 { return float64(n.raft.CurrentTerm()) }),
		gauge("tollgate_raft_commit_index", "Raft commit index.", func() float64 { return float64(n.raft.CommitIndex()) }),
		gauge("tollgate_applied_index", "Last index applied to the state machine.", func() float64 {
			i, _ := n.applied.get()
			return float64(i)
		}),
		gauge("tollgate_budgets", "Budgets held.", counts(func(c fsm.Counts) int { return c.Budgets })),
		gauge("tollgate_holds", "Active holds.", counts(func(c fsm.Counts) int { return c.Holds })),
		gauge("tollgate_policies", "Rate-limit policies.", counts(func(c fsm.Counts) int { return c.Policies })),
		gauge("tollgate_rate_keys", "Live rate-limit counters.", counts(func(c fsm.Counts) int { return c.RateKeys })),
		gauge("tollgate_idempotency_entries", "Remembered request ids.", counts(func(c fsm.Counts) int { return c.IdempotencyEntries })),
	)
}

func hclogLevel(name string) hclog.Level {
	if level := hclog.LevelFromString(name); level != hclog.NoLevel {
		return level
	}
	return hclog.Error
}

// hclogWriter adapts memberlist's standard logger to the Raft log level: its
// lines start with "[LEVEL]".
func hclogWriter(level string) io.Writer {
	return hclog.New(&hclog.LoggerOptions{Name: "gossip", Level: hclogLevel(level), Output: os.Stderr}).
		StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})
}

// countingLogStore records how many entries each log write carries: raft-boltdb
// commits (and fsyncs) once per StoreLogs call.
type countingLogStore struct {
	raft.LogStore
	observe func(float64)
	// lastApplied is Raft's applied index (0 while unknown): compaction
	// never removes entries past it (see DeleteRange).
	lastApplied func() uint64
	// gapless: the store refuses gaps and reads below its logical head
	// (the WAL); see GetLog and gapResetLog.
	gapless bool
}

func (c *countingLogStore) StoreLog(l *raft.Log) error {
	c.observe(1)
	return c.LogStore.StoreLog(l)
}

// GetLog honours the store's first index: the WAL truncates its head
// logically and still reads entries below it from a live segment, which
// would let a leader feed a lagging follower entries its snapshot already
// covers instead of installing the snapshot. Compacted means gone, as in
// raft-boltdb.
func (c *countingLogStore) GetLog(index uint64, log *raft.Log) error {
	if c.gapless {
		first, err := c.LogStore.FirstIndex()
		if err != nil {
			return err
		}
		if index < first {
			return raft.ErrLogNotFound
		}
	}
	return c.LogStore.GetLog(index, log)
}

// DeleteRange never compacts the head of the log past the applied index.
// hashicorp/raft compacts after a snapshot from the snapshot goroutine; if a
// snapshot install from the leader moved the state machine back meanwhile,
// that compaction would reach entries not applied yet (found by jepsen:
// "log not found" for lastApplied+1). A head truncation that leaves a tail
// is cut at the applied index; deleting the whole log (after a snapshot
// install or restore) and suffix truncations pass unchanged.
func (c *countingLogStore) DeleteRange(min, max uint64) error {
	if c.lastApplied != nil {
		first, ferr := c.LogStore.FirstIndex()
		last, lerr := c.LogStore.LastIndex()
		if applied := c.lastApplied(); ferr == nil && lerr == nil && applied > 0 && min <= first && max < last {
			// Keep the applied entry itself too: after an install at X a
			// follower whose log runs past X proves the leader's
			// PrevLogEntry X by reading entry X.
			if max >= applied {
				if min >= applied {
					return nil
				}
				max = applied - 1
			}
		}
	}
	return c.LogStore.DeleteRange(min, max)
}

func (c *countingLogStore) StoreLogs(logs []*raft.Log) error {
	c.observe(float64(len(logs)))
	return c.LogStore.StoreLogs(logs)
}

// gapResetLog lets hashicorp/raft treat the WAL as a log that allows gaps,
// which is the path raft was built and tested on (raft-boltdb), instead of
// its MonotonicLogStore path, which is broken in v1.7.3 (hashicorp/raft#697):
// after installing a snapshot it empties the log but keeps its in-memory
// last index, so a follower whose log ran past the snapshot index then
// appends after that stale index into the empty store, leaving a hole
// between the snapshot and the log; it panics with "log not found" when it
// applies, or when it restarts (jepsen seeds 136989261 and 602657676).
//
// On the gap-tolerant path raft compacts after an install (a prefix up to
// the snapshot index, as with bbolt) and its last index stays true. The one
// gap it then makes is the first append after an install or a restore that
// moved past the log's end: the entry at index i is appended only when
// entry i-1 matched the leader, and here it matched through the snapshot,
// which covers everything the log holds; so the log is cleared (through the
// cache) and the WAL starts again at i.
type gapResetLog struct {
	raft.LogStore
	logger hclog.Logger
}

func (g *gapResetLog) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

func (g *gapResetLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	last, err := g.LogStore.LastIndex()
	if err != nil {
		return err
	}
	if next := logs[0].Index; last > 0 && next > last+1 {
		first, err := g.LogStore.FirstIndex()
		if err != nil {
			return err
		}
		g.logger.Info("clearing the log before a gap (a snapshot covers it)", "first", first, "last", last, "next", next)
		if err := g.LogStore.DeleteRange(first, last); err != nil {
			return fmt.Errorf("clear the log before index %d: %w", next, err)
		}
	}
	return g.LogStore.StoreLogs(logs)
}

// loadIncarnation returns the random name of this data directory, creating it
// on first start.
func loadIncarnation(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "incarnation")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	inc := hex.EncodeToString(raw[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(inc+"\n"), 0o600); err != nil {
		return "", err
	}
	return inc, os.Rename(tmp, path)
}

// LeaderAddr reports whether this node is the leader, and the leader's API
// address (empty when no leader is known).
func (n *Node) LeaderAddr() (bool, string) {
	if n.raft.State() == raft.Leader {
		return true, n.cfg.APIAddr
	}
	_, id := n.raft.LeaderWithID()
	n.mu.Lock()
	defer n.mu.Unlock()
	return false, n.apiAddrs[string(id)]
}
