package node

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/fsm"
)

// Status is this node's view of the cluster.
type Status struct {
	NodeID, State, LeaderID, LeaderRaftAddr, LeaderAPIAddr, APIAddr, Version string
	Term, CommitIndex, AppliedIndex, LastLogIndex, LastSnapshotIndex         uint64
	LastLogTimeMs                                                            int64
	// Members are the servers of the Raft configuration.
	Members []Member
	// GossipOnly are pool members not (yet) in the Raft configuration.
	GossipOnly []Member
	StateHash  string
}

// Member is one server as seen from here.
type Member struct {
	ID, RaftAddr, Suffrage, APIAddr, Gossip string
	Leader                                  bool
	// With progress: the member's own report.
	Reachable                             bool
	State, Version                        string
	Term, AppliedIndex, LastLogIndex, Lag uint64
}

// StatusOptions choose the expensive parts of Status.
type StatusOptions struct {
	// Hash computes the state hash (a full serialization).
	Hash bool
	// Progress asks every member for its indexes.
	Progress bool
}

// Status reports the node's Raft state and members.
func (n *Node) Status(ctx context.Context, opts StatusOptions) (Status, error) {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	applied, _ := n.applied.get()
	st := Status{
		NodeID:         n.cfg.NodeID,
		State:          n.raft.State().String(),
		LeaderID:       string(leaderID),
		LeaderRaftAddr: string(leaderAddr),
		APIAddr:        n.cfg.APIAddr,
		Version:        n.cfg.Version,
		Term:           n.raft.CurrentTerm(),
		CommitIndex:    n.raft.CommitIndex(),
		AppliedIndex:   applied,
		LastLogIndex:   n.raft.LastIndex(),
		LastLogTimeMs:  n.machine.LastLogTimeMs(),
	}
	st.LastSnapshotIndex, _ = strconv.ParseUint(n.raft.Stats()["last_snapshot_index"], 10, 64)
	n.mu.Lock()
	st.LeaderAPIAddr = n.apiAddrs[string(leaderID)]
	n.mu.Unlock()
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return st, err
	}
	var pool map[string]gossipMember
	if n.gossip != nil {
		pool = n.gossip.view()
	}
	inConfig := map[string]bool{}
	for _, s := range cf.Configuration().Servers {
		id := string(s.ID)
		inConfig[id] = true
		st.Members = append(st.Members, n.member(id, string(s.Address), s.Suffrage.String(), id == string(leaderID), pool))
	}
	for id, m := range pool {
		if !inConfig[id] {
			st.GossipOnly = append(st.GossipOnly, n.member(id, m.meta.RaftAddr, "", false, pool))
		}
	}
	sort.Slice(st.GossipOnly, func(i, j int) bool { return st.GossipOnly[i].ID < st.GossipOnly[j].ID })
	if opts.Progress {
		n.fillProgress(ctx, &st)
	}
	if opts.Hash {
		h, index, err := n.machine.StateHash()
		if err != nil {
			return st, err
		}
		st.StateHash, st.AppliedIndex = h, index
	}
	return st, nil
}

func (n *Node) member(id, raftAddr, suffrage string, leader bool, pool map[string]gossipMember) Member {
	m := Member{ID: id, RaftAddr: raftAddr, Suffrage: suffrage, Leader: leader, Gossip: "unknown"}
	n.mu.Lock()
	m.APIAddr = n.apiAddrs[id]
	n.mu.Unlock()
	if g, ok := pool[id]; ok {
		m.Gossip = gossipStateName(g.state)
		m.Version = g.meta.Version
	}
	if id == n.cfg.NodeID {
		m.Gossip = "alive"
		m.Version = n.cfg.Version
	}
	return m
}

// fillProgress asks every member (concurrently, bounded by progressTimeout)
// for its indexes; lag is measured from the highest commit index reported.
func (n *Node) fillProgress(ctx context.Context, st *Status) {
	var wg sync.WaitGroup
	for i := range st.Members {
		m := &st.Members[i]
		if m.ID == n.cfg.NodeID {
			m.Reachable, m.State, m.Term = true, st.State, st.Term
			m.AppliedIndex, m.LastLogIndex = st.AppliedIndex, st.LastLogIndex
			continue
		}
		if m.APIAddr == "" || n.peers == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, progressTimeout)
			defer cancel()
			p, err := n.peers.Progress(pctx, m.APIAddr)
			if err != nil {
				return
			}
			m.Reachable, m.State, m.Term = true, p.State, p.Term
			m.AppliedIndex, m.LastLogIndex = p.AppliedIndex, p.LastLogIndex
			if p.Version != "" {
				m.Version = p.Version
			}
		}()
	}
	wg.Wait()
	commit := st.CommitIndex
	for _, m := range st.Members {
		commit = max(commit, m.AppliedIndex)
	}
	for i := range st.Members {
		if st.Members[i].Reachable {
			st.Members[i].Lag = commit - min(commit, st.Members[i].AppliedIndex)
		}
	}
}

// Progress is this node's own report, for other nodes' status and promotion.
func (n *Node) Progress() Progress {
	applied, _ := n.applied.get()
	return Progress{
		NodeID:       n.cfg.NodeID,
		State:        n.raft.State().String(),
		Version:      n.cfg.Version,
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: applied,
		LastLogIndex: n.raft.LastIndex(),
	}
}

// snapshotRestoreBytesMax bounds an uploaded snapshot.
const snapshotRestoreBytesMax = 2 << 30

// SnapshotSave returns the leader's state encoded as a snapshot, after a
// linearizable read fence, and the index it reflects.
func (n *Node) SnapshotSave(ctx context.Context) ([]byte, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, n.notLeader()
	}
	if err := n.readFence(ctx, true); err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	if err := n.machine.WriteSnapshot(&buf); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), n.machine.AppliedIndex(), nil
}

// SnapshotRestore replaces the state of the whole cluster with data (leader
// only). The snapshot is decoded and checked completely first, so a bad file
// never reaches Raft (a replica that cannot restore a snapshot stops). The
// Raft configuration is kept. Returns the applied index and state hash after
// the restore.
func (n *Node) SnapshotRestore(ctx context.Context, data []byte) (uint64, string, error) {
	if n.raft.State() != raft.Leader {
		return 0, "", n.notLeader()
	}
	if len(data) > snapshotRestoreBytesMax {
		return 0, "", &fsm.Error{Code: fsm.CodeInvalidArgument, Message: fmt.Sprintf("snapshot of %d bytes exceeds %d", len(data), snapshotRestoreBytesMax)}
	}
	check := fsm.New()
	if err := check.Restore(bytes.NewReader(data)); err != nil {
		return 0, "", &fsm.Error{Code: fsm.CodeInvalidArgument, Message: err.Error()}
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: check.AppliedIndex(), Size: int64(len(data))}
	if err := n.raft.Restore(meta, bytes.NewReader(data), 5*time.Minute); err != nil {
		return 0, "", fmt.Errorf("%w: restore: %v", ErrUnknownOutcome, err)
	}
	// Raft ends a restore with its own no-op, which the state machine never
	// sees; commit one of ours so the applied index moves past it.
	if _, _, err := n.Propose(ctx, &fsm.Noop{}); err != nil {
		return 0, "", err
	}
	hash, index, err := n.machine.StateHash()
	return index, hash, err
}
