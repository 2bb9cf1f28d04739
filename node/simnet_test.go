package node_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// simNet is the network of an in-process simulation: every Raft RPC between
// nodes goes through it, so a seeded schedule can cut links, drop, delay and
// duplicate messages. A request can be delivered and its reply lost, as on a
// real network. (Go's scheduler still decides interleavings, so a seed fixes
// the fault schedule, not every message's fate.)
type simNet struct {
	mu        sync.Mutex
	rng       *rand.Rand
	blocked   map[[2]raft.ServerAddress]bool
	dropPct   int
	dupPct    int
	delayMax  time.Duration
	endpoints map[raft.ServerAddress]*simTransport
}

var errUnreachable = errors.New("sim: unreachable")

// rpcTimeout bounds one simulated RPC round trip.
const rpcTimeout = 500 * time.Millisecond

func newSimNet(seed int64) *simNet {
	return &simNet{
		rng:       rand.New(rand.NewSource(seed)),
		blocked:   map[[2]raft.ServerAddress]bool{},
		endpoints: map[raft.ServerAddress]*simTransport{},
	}
}

// attach creates (or replaces, for a restarted node) the endpoint of addr.
func (n *simNet) attach(addr raft.ServerAddress) *simTransport {
	t := &simTransport{net: n, addr: addr, consumer: make(chan raft.RPC, 64), shutdown: make(chan struct{})}
	n.mu.Lock()
	n.endpoints[addr] = t
	n.mu.Unlock()
	return t
}

// cut blocks traffic from a to b (call twice for both directions).
func (n *simNet) cut(a, b raft.ServerAddress, blocked bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if blocked {
		n.blocked[[2]raft.ServerAddress{a, b}] = true
	} else {
		delete(n.blocked, [2]raft.ServerAddress{a, b})
	}
}

func (n *simNet) healAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.blocked)
	n.dropPct, n.dupPct, n.delayMax = 0, 0, 0
}

func (n *simNet) setNoise(dropPct, dupPct int, delayMax time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dropPct, n.dupPct, n.delayMax = dropPct, dupPct, delayMax
}

// fate decides one message from a to b: whether it gets through, how late,
// and whether it is delivered twice.
func (n *simNet) fate(a, b raft.ServerAddress) (ok bool, delay time.Duration, dup bool, to *simTransport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	to = n.endpoints[b]
	if to == nil || n.blocked[[2]raft.ServerAddress{a, b}] || (n.dropPct > 0 && n.rng.Intn(100) < n.dropPct) {
		return false, 0, false, nil
	}
	if n.delayMax > 0 {
		delay = time.Duration(n.rng.Int63n(int64(n.delayMax)))
	}
	return true, delay, n.dupPct > 0 && n.rng.Intn(100) < n.dupPct, to
}

// reachable reports whether a message from a to b would pass the cuts
// (node-to-node API calls use it).
func (n *simNet) reachable(a, b raft.ServerAddress) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.blocked[[2]raft.ServerAddress{a, b}] && !n.blocked[[2]raft.ServerAddress{b, a}]
}

// simTransport implements raft.Transport over simNet.
type simTransport struct {
	net      *simNet
	addr     raft.ServerAddress
	consumer chan raft.RPC
	shutdown chan struct{}
	once     sync.Once
}

var _ raft.Transport = (*simTransport)(nil)

func (t *simTransport) Consumer() <-chan raft.RPC          { return t.consumer }
func (t *simTransport) LocalAddr() raft.ServerAddress      { return t.addr }
func (t *simTransport) SetHeartbeatHandler(func(raft.RPC)) {}
func (t *simTransport) EncodePeer(_ raft.ServerID, a raft.ServerAddress) []byte {
	return []byte(a)
}
func (t *simTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

func (t *simTransport) Close() error {
	t.once.Do(func() { close(t.shutdown) })
	return nil
}

func (t *simTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (t *simTransport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	out, err := t.call(target, args, nil)
	if err == nil {
		*resp = *out.(*raft.AppendEntriesResponse)
	}
	return err
}

func (t *simTransport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	out, err := t.call(target, args, nil)
	if err == nil {
		*resp = *out.(*raft.RequestVoteResponse)
	}
	return err
}

func (t *simTransport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	out, err := t.call(target, args, nil)
	if err == nil {
		*resp = *out.(*raft.TimeoutNowResponse)
	}
	return err
}

func (t *simTransport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	out, err := t.call(target, args, data)
	if err == nil {
		*resp = *out.(*raft.InstallSnapshotResponse)
	}
	return err
}

// call delivers one RPC, possibly late and possibly twice, and waits for the
// reply, which must also cross the network back.
func (t *simTransport) call(target raft.ServerAddress, args any, data io.Reader) (any, error) {
	ok, delay, dup, to := t.net.fate(t.addr, target)
	if !ok {
		return nil, fmt.Errorf("%w: %s -> %s", errUnreachable, t.addr, target)
	}
	if delay > 0 {
		<-time.After(delay) // simulated latency, on the sender's goroutine
	}
	if dup && data == nil {
		go to.deliver(copyRPC(args), nil) // the duplicate's reply is lost
	}
	// The receiver gets its own copy: the sender reuses its request after a
	// timeout, while a late delivery may still be reading it.
	resp, err := to.deliver(copyRPC(args), data)
	if err != nil {
		return nil, err
	}
	if back, _, _, _ := t.net.fate(target, t.addr); !back {
		return nil, fmt.Errorf("%w: reply %s -> %s", errUnreachable, target, t.addr)
	}
	return resp, nil
}

func (t *simTransport) deliver(args any, data io.Reader) (any, error) {
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: args, Reader: data, RespChan: respCh}
	timer := time.NewTimer(rpcTimeout)
	defer timer.Stop()
	select {
	case t.consumer <- rpc:
	case <-t.shutdown:
		return nil, errUnreachable
	case <-timer.C:
		return nil, fmt.Errorf("%w: %s busy", errUnreachable, t.addr)
	}
	select {
	case r := <-respCh:
		return r.Response, r.Error
	case <-t.shutdown:
		return nil, errUnreachable
	case <-timer.C:
		return nil, fmt.Errorf("%w: %s did not answer", errUnreachable, t.addr)
	}
}

// copyRPC copies a request as a network would (the entries' Log values are
// not modified after they are created, so the slice of pointers is copied).
func copyRPC(args any) any {
	switch a := args.(type) {
	case *raft.AppendEntriesRequest:
		c := *a
		c.Entries = append([]*raft.Log(nil), a.Entries...)
		c.PrevLogEntry, c.PrevLogTerm = a.PrevLogEntry, a.PrevLogTerm
		return &c
	case *raft.RequestVoteRequest:
		c := *a
		return &c
	case *raft.TimeoutNowRequest:
		c := *a
		return &c
	case *raft.InstallSnapshotRequest:
		c := *a
		return &c
	}
	return args
}
