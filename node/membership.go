package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/fsm"
)

// Peers is how a node talks to other nodes' internal API. The transport
// package implements it; node only declares what it needs.
type Peers interface {
	// Forward proposes encoded commands on the leader at apiAddr.
	Forward(ctx context.Context, apiAddr string, cmds [][]byte) ([]fsm.Result, uint64, error)
	// ReadIndex asks the leader at apiAddr for its commit index, proving its
	// leadership to a quorum first when verify is set.
	ReadIndex(ctx context.Context, apiAddr string, verify bool) (uint64, error)
	// Progress asks the node at apiAddr for its own indexes.
	Progress(ctx context.Context, apiAddr string) (Progress, error)
	// FetchReceipts asks the node at apiAddr for its stored receipts of the
	// entries in [from, to] (at most limit) and the index through which it
	// holds every checkpoint from from on (0: it cannot vouch for from).
	FetchReceipts(ctx context.Context, apiAddr string, from, to uint64, limit int) ([]IndexedReceipts, uint64, error)
}

// Progress is a node's own report of where it is.
type Progress struct {
	NodeID, State, Version                        string
	Term, CommitIndex, AppliedIndex, LastLogIndex uint64
}

const (
	// promoteLagMax: a non-voter is promoted once its applied index is within
	// this many entries of the leader's commit index.
	promoteLagMax = 64
	// progressTimeout bounds one Progress call to a member.
	progressTimeout = time.Second
	// membershipChangeTimeout bounds one Raft configuration change.
	membershipChangeTimeout = 10 * time.Second
)

// membership is the leader's bookkeeping for reconciling gossip with Raft.
type membership struct {
	mu            sync.Mutex
	missingSince  map[string]time.Time // raft servers not alive in gossip
	bootstrapDone bool
	lastRejoin    time.Time
	rejoining     bool
}

func newMembership() *membership {
	return &membership{missingSince: map[string]time.Time{}}
}

// runMembership keeps gossip metadata current, bootstraps with
// --bootstrap-expect, and (on the leader) reconciles gossip with Raft.
func (n *Node) runMembership() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.stopping:
			return
		case <-tick.C:
		case <-n.gossip.changed:
		}
		n.refreshGossipMeta()
		n.gossip.saveKnownPeers(n.cfg.DataDir, n.cfg.NodeID)
		if n.raft.State() == raft.Shutdown {
			n.log.Error("this server was removed from the Raft configuration; leaving the gossip pool (start it with a fresh data dir to rejoin)",
				"node_id", n.cfg.NodeID)
			n.gossip.leave()
			return
		}
		n.tryBootstrapExpect()
		n.rejoinMissing()
		if n.isReadyLeader() {
			n.reconcile()
		} else {
			n.members.mu.Lock()
			clear(n.members.missingSince)
			n.members.mu.Unlock()
		}
	}
}

func (n *Node) refreshGossipMeta() {
	hasState := n.raft.LastIndex() > 0
	n.gossip.setSelf(func(m *gossipMeta) { m.HasState = m.HasState || hasState })
}

// tryBootstrapExpect bootstraps a fresh cluster once exactly the expected
// number of fresh servers with the same --bootstrap-expect are alive in the
// pool. Every one of them builds the same configuration (the expected
// servers with the lowest ids), so their bootstraps agree. A server that sees
// a member with Raft state never bootstraps: the leader will add it.
func (n *Node) tryBootstrapExpect() {
	expect := n.cfg.BootstrapExpect
	n.members.mu.Lock()
	done := n.members.bootstrapDone
	n.members.mu.Unlock()
	if expect < 2 || done || n.raft.LastIndex() > 0 {
		return
	}
	var ready []gossipMeta
	for _, m := range n.gossip.sortedAlive() {
		if m.HasState {
			n.log.Info("found an existing cluster in the gossip pool; waiting to be added", "member", m.ID)
			n.markBootstrapDone()
			return
		}
		if m.Expect != expect {
			n.log.Warn("gossip member has a different --bootstrap-expect; not counting it", "member", m.ID, "its_expect", m.Expect, "ours", expect)
			continue
		}
		ready = append(ready, m)
	}
	if len(ready) < expect {
		return
	}
	ready = ready[:expect]
	cfg := raft.Configuration{}
	self := false
	for _, m := range ready {
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr)})
		self = self || m.ID == n.cfg.NodeID
	}
	n.markBootstrapDone()
	if !self {
		return // the expected servers are others; the leader will add us
	}
	if err := n.raft.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		n.log.Error("bootstrap failed", "err", err)
		return
	}
	n.log.Info("bootstrapped a new cluster", "voters", len(cfg.Servers), "node_id", n.cfg.NodeID)
}

// rejoinMissing contacts the pool again while a server of the Raft
// configuration is not alive in it. After a partition heals, each side may
// have declared the other dead, and memberlist only gossips with the dead
// for a while; Raft dials only servers gossip vouches for, so the pool must
// be whole again for Raft to be.
func (n *Node) rejoinMissing() {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	pool := n.gossip.view()
	missing := false
	for _, s := range cf.Configuration().Servers {
		missing = missing || (string(s.ID) != n.cfg.NodeID && !pool[string(s.ID)].alive())
	}
	n.members.mu.Lock()
	defer n.members.mu.Unlock()
	if !missing || n.members.rejoining || time.Since(n.members.lastRejoin) < 5*n.cfg.ReconcileInterval {
		return
	}
	n.members.lastRejoin, n.members.rejoining = time.Now(), true
	addrs := append(append([]string(nil), n.cfg.Join...), loadKnownPeers(n.cfg.DataDir)...)
	for id, m := range pool {
		if id != n.cfg.NodeID && m.addr != "" {
			addrs = append(addrs, m.addr)
		}
	}
	go func() { // a join waits on timeouts; the loop must not
		n.gossip.join(addrs)
		n.members.mu.Lock()
		n.members.rejoining = false
		n.members.mu.Unlock()
	}()
}

func (n *Node) markBootstrapDone() {
	n.members.mu.Lock()
	n.members.bootstrapDone = true
	n.members.mu.Unlock()
}

// reconcile brings the Raft configuration in line with gossip, one change at
// a time: add alive servers as non-voters, promote caught-up non-voters, and
// remove servers missing longer than the grace period when that keeps a
// quorum of the remaining voters alive.
func (n *Node) reconcile() {
	n.ensureSigningKey()
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	servers := cf.Configuration().Servers
	pool := n.gossip.view()
	inConfig := map[string]raft.Server{}
	for _, s := range servers {
		inConfig[string(s.ID)] = s
	}
	if n.updateAddresses(pool, servers) || n.addNewServers(pool, inConfig) || n.promoteCaughtUp(pool, servers) {
		return
	}
	n.removeMissing(pool, servers)
}

// updateAddresses rewrites a server's address in the configuration when it
// announces another one (Raft dials the announced one anyway; this keeps the
// configuration, snapshots and status truthful). Addresses must stay unique
// in a configuration, so when two servers swapped addresses the one holding
// the address first gets a placeholder that never resolves; the next passes
// give both their real addresses.
func (n *Node) updateAddresses(pool map[string]gossipMember, servers []raft.Server) bool {
	holder := map[raft.ServerAddress]raft.Server{}
	for _, s := range servers {
		holder[s.Address] = s
	}
	for _, s := range servers {
		var announced string
		if string(s.ID) == n.cfg.NodeID {
			announced = string(n.transport.LocalAddr())
		} else if m, ok := pool[string(s.ID)]; ok && m.alive() {
			announced = m.meta.RaftAddr
		}
		if announced == "" || announced == string(s.Address) {
			continue
		}
		target, addr := s, raft.ServerAddress(announced)
		if other, taken := holder[addr]; taken && other.ID != s.ID {
			target, addr = other, raft.ServerAddress("moved."+string(other.ID)+".invalid:0")
		}
		var f raft.IndexFuture
		if target.Suffrage == raft.Voter {
			f = n.raft.AddVoter(target.ID, addr, 0, membershipChangeTimeout)
		} else {
			f = n.raft.AddNonvoter(target.ID, addr, 0, membershipChangeTimeout)
		}
		if err := n.waitChange(f); err != nil {
			n.log.Warn("updating a server's address failed", "member", target.ID, "err", err)
		} else {
			n.log.Info("updated a server's Raft address", "member", target.ID, "from", target.Address, "to", addr)
		}
		return true
	}
	return false
}

func (n *Node) addNewServers(pool map[string]gossipMember, inConfig map[string]raft.Server) bool {
	ids := make([]string, 0, len(pool))
	for id := range pool {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := pool[id]
		if _, ok := inConfig[id]; ok || !m.alive() || m.meta.RaftAddr == "" || n.removedByAdmin(id, m.meta.Incarnation) {
			continue
		}
		err := n.waitChange(n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(m.meta.RaftAddr), 0, membershipChangeTimeout))
		if err != nil {
			n.log.Warn("adding a server as non-voter failed", "member", id, "err", err)
			return true
		}
		n.log.Info("added a server as non-voter", "member", id, "raft_addr", m.meta.RaftAddr)
		return true
	}
	return false
}

func (n *Node) promoteCaughtUp(pool map[string]gossipMember, servers []raft.Server) bool {
	for _, s := range servers {
		m, ok := pool[string(s.ID)]
		if s.Suffrage == raft.Voter || !ok || !m.alive() || n.peers == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
		p, err := n.peers.Progress(ctx, m.meta.APIAddr)
		cancel()
		if err != nil || p.AppliedIndex+promoteLagMax < n.raft.CommitIndex() {
			continue
		}
		if err := n.waitChange(n.raft.AddVoter(s.ID, s.Address, 0, membershipChangeTimeout)); err != nil {
			n.log.Warn("promoting a server failed", "member", s.ID, "err", err)
			return true
		}
		n.log.Info("promoted a caught-up server to voter", "member", s.ID, "applied_index", p.AppliedIndex)
		return true
	}
	return false
}

func (n *Node) removeMissing(pool map[string]gossipMember, servers []raft.Server) {
	now := time.Now()
	voters, aliveVoters := 0, 0
	for _, s := range servers {
		alive := string(s.ID) == n.cfg.NodeID || pool[string(s.ID)].alive()
		if s.Suffrage == raft.Voter {
			voters++
			if alive {
				aliveVoters++
			}
		}
	}
	n.members.mu.Lock()
	defer n.members.mu.Unlock()
	for id := range n.members.missingSince {
		if _, ok := pool[id]; ok && pool[id].alive() {
			delete(n.members.missingSince, id)
		}
	}
	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.NodeID || pool[id].alive() {
			continue
		}
		since, ok := n.members.missingSince[id]
		if !ok {
			n.members.missingSince[id] = now
			continue
		}
		if now.Sub(since) < n.cfg.DeadServerGrace {
			continue
		}
		// Quorum safety: the voters still alive must be a majority of the
		// configuration without this server.
		if s.Suffrage == raft.Voter && aliveVoters < (voters-1)/2+1 {
			continue
		}
		if err := n.waitChange(n.raft.RemoveServer(s.ID, 0, membershipChangeTimeout)); err != nil {
			n.log.Warn("removing a dead server failed", "member", id, "err", err)
			return
		}
		delete(n.members.missingSince, id)
		n.log.Info("removed a server missing from gossip longer than the grace period", "member", id, "grace", n.cfg.DeadServerGrace)
		return
	}
}

// removedByAdmin: the replicated state says an admin removed this server's
// incarnation, so gossip must not bring it back.
func (n *Node) removedByAdmin(id, incarnation string) bool {
	removed := false
	n.machine.Read(0, func(v fsm.View) error {
		removed = v.ServerRemoved(id, incarnation)
		return nil
	})
	return removed
}

// Join makes this node join the gossip pool at addrs.
func (n *Node) Join(addrs []string) (int, error) {
	if n.gossip == nil {
		return 0, errors.New("gossip is off on this node (no --gossip-addr)")
	}
	return n.gossip.join(addrs)
}

// RemoveServer removes a server from the Raft configuration (leader only).
// The removal is first recorded in the replicated state, with the server's
// incarnation, so that no later leader re-adds it from gossip while the old
// process lingers; a server restarted with a fresh data dir may join again.
func (n *Node) RemoveServer(ctx context.Context, id string) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return 0, err
	}
	found := false
	for _, s := range cf.Configuration().Servers {
		found = found || string(s.ID) == id
	}
	if !found {
		return 0, &fsm.Error{Code: fsm.CodeNotFound, Message: fmt.Sprintf("server %q is not in the Raft configuration", id)}
	}
	incarnation := ""
	if n.gossip != nil {
		incarnation = n.gossip.view()[id].meta.Incarnation
	}
	if _, _, err := n.Propose(ctx, &fsm.MarkServerRemoved{ID: id, Incarnation: incarnation}); err != nil {
		return 0, err
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, membershipChangeTimeout)
	if err := n.waitFuture(ctx, f); err != nil {
		return 0, n.applyError(err)
	}
	return f.Index(), nil
}

// TransferLeadership hands leadership to id, or to the most up-to-date
// follower when id is empty, and returns the new leader's id.
func (n *Node) TransferLeadership(ctx context.Context, id string) (string, error) {
	if n.raft.State() != raft.Leader {
		return "", n.notLeader()
	}
	if id == n.cfg.NodeID {
		return id, nil // already there
	}
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		cf := n.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return "", err
		}
		var target *raft.Server
		for _, s := range cf.Configuration().Servers {
			if string(s.ID) == id {
				target = &s
			}
		}
		if target == nil || target.Suffrage != raft.Voter {
			return "", &fsm.Error{Code: fsm.CodeNotFound, Message: fmt.Sprintf("server %q is not a voter of this cluster", id)}
		}
		f = n.raft.LeadershipTransferToServer(target.ID, target.Address)
	}
	if err := n.waitFuture(ctx, f); err != nil {
		return "", fmt.Errorf("%w: leadership transfer: %v", ErrUnknownOutcome, err)
	}
	// Raft may answer the transfer before this node forgets it led; wait for
	// another leader (or, after a second, accept whoever leads: the target may
	// have lost the election to us).
	settle := time.Now().Add(time.Second)
	for ctx.Err() == nil {
		_, leader := n.raft.LeaderWithID()
		if leader != "" && (string(leader) != n.cfg.NodeID || time.Now().After(settle)) {
			return string(leader), nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	return "", ctx.Err()
}
