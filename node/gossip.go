package node

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip (hashicorp/memberlist) only discovers servers and carries their
// addresses; it never decides who votes. The leader reads it to add new
// servers as non-voters, promote caught-up ones, and remove servers that stay
// dead (membership.go).

// gossipMeta is what every node tells the pool about itself (JSON, well
// below memberlist's 512-byte limit).
type gossipMeta struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft"`
	APIAddr  string `json:"api"`
	Version  string `json:"v,omitempty"`
	// HasState: this node holds Raft state (bootstrapped or added); a fresh
	// node seeing one never bootstraps a new cluster.
	HasState bool `json:"state,omitempty"`
	// Incarnation names this node's data directory; an admin removal is
	// remembered per incarnation.
	Incarnation string `json:"inc,omitempty"`
	// Expect is the node's --bootstrap-expect.
	Expect int `json:"expect,omitempty"`
}

// gossipMetaBytesMax bounds the metadata we accept from a pool member.
const gossipMetaBytesMax = 512

// gossipMember is one pool member as this node last heard of it.
type gossipMember struct {
	known bool // false for the zero value of a map miss
	meta  gossipMeta
	state memberlist.NodeStateType
	addr  string
}

func (m gossipMember) alive() bool { return m.known && m.state == memberlist.StateAlive }

func gossipStateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

type gossip struct {
	ml       *memberlist.Memberlist
	bindAddr string // the address the pool listens on, fixed at start

	mu      sync.Mutex
	self    gossipMeta
	members map[string]gossipMember // by node id
	changed chan struct{}           // signalled (non-blocking) on every event
	onMeta  func(gossipMeta)
}

// startGossip binds the pool at bindAddr and returns once it listens.
// gossipSecurity is the pool's key and label (see Config.GossipKey).
type gossipSecurity struct {
	key   []byte
	label string
}

func startGossip(bindAddr, advertise string, self gossipMeta, logOut io.Writer, onMeta func(gossipMeta), fast bool, sec gossipSecurity) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(bindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", bindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: bad port", bindAddr)
	}
	g := &gossip{self: self, members: map[string]gossipMember{}, changed: make(chan struct{}, 1), onMeta: onMeta}
	mc := memberlist.DefaultLANConfig()
	mc.Name = self.ID
	mc.BindAddr = host
	if host == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = port
	if advertise != "" {
		ah, ap, err := net.SplitHostPort(advertise)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise address %q: %w", advertise, err)
		}
		if ips, err := net.LookupIP(ah); err == nil && len(ips) > 0 {
			ah = ips[0].String()
		}
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	}
	if sec.key != nil {
		// Encrypt everything sent and refuse anything received in the clear.
		mc.SecretKey = sec.key
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.Label = sec.label
	mc.Delegate = (*gossipDelegate)(g)
	mc.Events = (*gossipEvents)(g)
	mc.Logger = log.New(logOut, "memberlist: ", 0)
	if fast {
		// Tests on loopback: detect a dead node in about a second.
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.GossipInterval = 50 * time.Millisecond
		mc.SuspicionMult = 2
		mc.PushPullInterval = 2 * time.Second
	}
	// A node that restarts with the same name at a new address may take its
	// name back at once.
	mc.DeadNodeReclaimTime = time.Second
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", bindAddr, err)
	}
	g.ml = ml
	local := ml.LocalNode()
	g.bindAddr = net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port)))
	return g, nil
}

// addr is the address the pool listens on.
func (g *gossip) addr() string { return g.bindAddr }

// join contacts the given pool members; it returns how many answered.
func (g *gossip) join(addrs []string) (int, error) {
	return g.ml.Join(addrs)
}

// setSelf updates this node's metadata and gossips it if it changed.
func (g *gossip) setSelf(update func(*gossipMeta)) {
	g.mu.Lock()
	before := g.self
	update(&g.self)
	changed := g.self != before
	g.mu.Unlock()
	if changed {
		g.ml.UpdateNode(5 * time.Second)
	}
}

// view returns the members by id (including this node).
func (g *gossip) view() map[string]gossipMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]gossipMember, len(g.members))
	for id, m := range g.members {
		out[id] = m
	}
	return out
}

// raftAddr returns the Raft address an alive member announces for itself.
func (g *gossip) raftAddr(id string) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.members[id]
	if !ok || !m.alive() || m.meta.RaftAddr == "" {
		return "", false
	}
	return m.meta.RaftAddr, true
}

// othersAlive counts the alive members other than self.
func (g *gossip) othersAlive(self string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	count := 0
	for id, m := range g.members {
		if id != self && m.alive() {
			count++
		}
	}
	return count
}

// sortedAlive returns the metadata of alive members, by id.
func (g *gossip) sortedAlive() []gossipMeta {
	var out []gossipMeta
	for _, m := range g.view() {
		if m.alive() {
			out = append(out, m.meta)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (g *gossip) leave() {
	g.ml.Leave(2 * time.Second)
	g.ml.Shutdown()
}

func (g *gossip) shutdown() { g.ml.Shutdown() }

// record notes an event about a member. memberlist hands events the member's
// embedded Node, whose State field it never updates (the current state lives
// in its own nodeState), so the event kind decides the state here.
func (g *gossip) record(n *memberlist.Node, state memberlist.NodeStateType) {
	var meta gossipMeta
	if len(n.Meta) > 0 && len(n.Meta) <= gossipMetaBytesMax {
		if err := json.Unmarshal(n.Meta, &meta); err != nil {
			meta = gossipMeta{}
		}
	}
	if meta.ID == "" {
		meta.ID = n.Name
	}
	g.mu.Lock()
	g.members[n.Name] = gossipMember{known: true, meta: meta, state: state, addr: n.Address()}
	g.mu.Unlock()
	if g.onMeta != nil && meta.APIAddr != "" {
		g.onMeta(meta)
	}
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

type gossipDelegate gossip

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	g := (*gossip)(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	b, err := json.Marshal(g.self)
	if err != nil || len(b) > limit {
		panic(fmt.Sprintf("node: gossip metadata of %d bytes exceeds %d", len(b), limit))
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

type gossipEvents gossip

func (e *gossipEvents) NotifyJoin(n *memberlist.Node) {
	(*gossip)(e).record(n, memberlist.StateAlive)
}

// NotifyLeave is called for a member that left or was declared dead.
func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	(*gossip)(e).record(n, memberlist.StateDead)
}

// NotifyUpdate is called when an alive member's metadata changed.
func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) {
	(*gossip)(e).record(n, memberlist.StateAlive)
}

// knownPeersFile keeps the gossip addresses of the members last seen alive,
// so a restarted server finds the pool (and Raft, which only dials addresses
// gossip vouches for, finds its peers) even without --join.
const knownPeersFile = "gossip-peers.json"

// knownPeersMax bounds the remembered addresses.
const knownPeersMax = 64

func loadKnownPeers(dataDir string) []string {
	b, err := os.ReadFile(filepath.Join(dataDir, knownPeersFile))
	if err != nil {
		return nil
	}
	var addrs []string
	if json.Unmarshal(b, &addrs) != nil || len(addrs) > knownPeersMax {
		return nil
	}
	return addrs
}

// saveKnownPeers writes the alive members' gossip addresses if they changed.
func (g *gossip) saveKnownPeers(dataDir, self string) {
	var addrs []string
	for id, m := range g.view() {
		if id != self && m.alive() && m.addr != "" {
			addrs = append(addrs, m.addr)
		}
	}
	sort.Strings(addrs)
	if len(addrs) == 0 || len(addrs) > knownPeersMax {
		return
	}
	b, _ := json.Marshal(addrs)
	path := filepath.Join(dataDir, knownPeersFile)
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return
	}
	tmp := path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, path)
	}
}
