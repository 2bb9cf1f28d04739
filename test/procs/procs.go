// Package procs runs real tollgate processes for integration and fault tests:
// it builds the binary once, starts N nodes on loopback (or each in its own
// network namespace, so that links between nodes can really be cut), and
// kills, stops, pauses and restarts them. Nothing here fakes a part of
// tollgate; it only drives the real binary.
package procs

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

// build is one binary built for one set of build tags.
type build struct {
	once sync.Once
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*build{} // by comma-joined sorted tags
)

// Binary builds ./cmd/tollgate once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return BinaryWithTags(t)
}

// BinaryWithTags builds ./cmd/tollgate with the given build tags (for
// example "tollgate_planted") once per test process and tag set, and returns
// its path.
func BinaryWithTags(t testing.TB, tags ...string) string {
	t.Helper()
	key := strings.Join(slices.Sorted(slices.Values(tags)), ",")
	buildsMu.Lock()
	b, ok := builds[key]
	if !ok {
		b = &build{}
		builds[key] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "tollgate-procs-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "tollgate")
		args := []string{"build", "-o", b.path}
		if key != "" {
			args = append(args, "-tags", key)
		}
		cmd := exec.Command("go", append(args, "./cmd/tollgate")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build -tags %q ./cmd/tollgate: %v\n%s", key, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Poll calls cond every interval until it returns true or timeout passes.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// FreePort reserves a port free for both TCP and UDP on 127.0.0.1 (gossip
// uses both) until the test ends.
//
// A port another socket takes between this check and the server's bind
// fails the server's start ("address already in use"), so ports are drawn
// below the kernel's ephemeral range, where no ":0" listener and no client
// connection ever lands, and reserved across test processes with a lock
// file (packages run in parallel). Where the ephemeral range leaves no room
// below it, this falls back to asking for ":0".
func FreePort(t testing.TB) int {
	t.Helper()
	low, high := portRange()
	reserved := low > 0
	for range 500 {
		var port int
		if reserved {
			port = low + portRand.IntN(high-low+1)
			if !reservePort(port) {
				continue
			}
		} else if port = ephemeralPort(); port == 0 {
			continue
		}
		if !bindable(port) {
			if reserved {
				releasePort(port)
			}
			continue
		}
		if reserved {
			t.Cleanup(func() { releasePort(port) })
		}
		return port
	}
	t.Fatal("no free TCP+UDP port")
	return 0
}

var portRand = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))

// portRange is where FreePort draws from: [10000, start of the ephemeral
// range), or (0, 0) when that is too narrow.
func portRange() (int, int) {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(raw))
	if len(f) != 2 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first-1 < 10000+1000 {
		return 0, 0
	}
	return 10000, first - 1
}

func ephemeralPort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func bindable(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	udp.Close()
	return true
}

// portLockDir holds one file per reserved port; a file older than
// portLockStale is left over from a killed test process and may be taken.
var portLockDir = filepath.Join(os.TempDir(), "tollgate-test-ports")

const portLockStale = 2 * time.Hour

func reservePort(port int) bool {
	if err := os.MkdirAll(portLockDir, 0o700); err != nil {
		return true // no registry: the bind check alone
	}
	path := filepath.Join(portLockDir, strconv.Itoa(port))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if fi, serr := os.Stat(path); serr == nil && time.Since(fi.ModTime()) > portLockStale {
			os.Remove(path)
		}
		return false
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	f.Close()
	return true
}

func releasePort(port int) { os.Remove(filepath.Join(portLockDir, strconv.Itoa(port))) }

// Node is one tollgate server process.
type Node struct {
	ID         string
	Host       string // IP the node listens on
	APIAddr    string
	RaftAddr   string
	GossipAddr string
	DataDir    string
	// Args are the serve flags (set by the cluster; tests may append).
	Args []string
	// Env is extra environment (KEY=VALUE) for this node's process, after
	// Options.Env; read at every Start.
	Env []string

	netns string
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	log   *ringLog
}

// Log returns the last lines the process printed.
func (n *Node) Log() string { return n.log.String() }

// Running reports whether the process is up (started and not exited).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Options configure a Cluster.
type Options struct {
	// Netns runs every node in its own network namespace behind a bridge
	// (needs root and iproute2), so Partition can cut links for real.
	Netns bool
	// Extra flags for every node's serve command.
	Extra []string
	// Auth, when set, are the authentication flags of every node (JWT keys,
	// cluster token); without it nodes run with --insecure. Token is then
	// the bearer token the harness's own calls (Status, ...) carry.
	Auth  []string
	Token string
	// TLS, when the nodes serve HTTPS, is the harness's client
	// configuration (the cluster CA).
	TLS *tls.Config
	// ElectionTimeout for every node (default 500ms).
	ElectionTimeout time.Duration
	// Tags builds the binary with these build tags (e.g. "tollgate_planted");
	// each tag set is built once per test process.
	Tags []string
	// Env is extra environment (KEY=VALUE) for every node's process, e.g.
	// TOLLGATE_PLANTED_BUG=no-barrier with Tags tollgate_planted.
	Env []string
}

// Cluster is a set of nodes started with --bootstrap-expect len(nodes).
type Cluster struct {
	mu        sync.Mutex // guards Nodes against AddNode while NodeList runs elsewhere
	t         testing.TB
	bin       string
	dir       string
	opts      Options
	net       *bridge
	Nodes     []*Node
	httpsOnce sync.Once
	https     *http.Client
}

// NewCluster prepares n nodes (not started) that bootstrap together.
func NewCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.ElectionTimeout == 0 {
		opts.ElectionTimeout = 500 * time.Millisecond
	}
	c := &Cluster{t: t, bin: BinaryWithTags(t, opts.Tags...), dir: t.TempDir(), opts: opts}
	if opts.Netns {
		c.net = newBridge(t)
	}
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, c.newNode(i))
	}
	var gossip []string
	for _, node := range c.Nodes {
		gossip = append(gossip, node.GossipAddr)
	}
	for _, node := range c.Nodes {
		node.Args = append(node.Args, "--bootstrap-expect", strconv.Itoa(n), "--join", strings.Join(gossip, ","))
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			c.Kill(node)
		}
		if t.Failed() {
			for _, node := range c.Nodes {
				t.Logf("--- last log lines of %s ---\n%s", node.ID, node.log.String())
			}
		}
	})
	return c
}

func (c *Cluster) newNode(i int) *Node {
	id := "n" + strconv.Itoa(i+1)
	n := &Node{ID: id, DataDir: filepath.Join(c.dir, id), log: newRingLog(200)}
	if c.net != nil {
		n.netns, n.Host = c.net.addHost(c.t, id, i)
		n.APIAddr = net.JoinHostPort(n.Host, "7070")
		n.RaftAddr = net.JoinHostPort(n.Host, "7071")
		n.GossipAddr = net.JoinHostPort(n.Host, "7072")
	} else {
		n.Host = "127.0.0.1"
		n.APIAddr = net.JoinHostPort(n.Host, strconv.Itoa(FreePort(c.t)))
		n.RaftAddr = net.JoinHostPort(n.Host, strconv.Itoa(FreePort(c.t)))
		n.GossipAddr = net.JoinHostPort(n.Host, strconv.Itoa(FreePort(c.t)))
	}
	auth := c.opts.Auth
	if auth == nil {
		auth = []string{"--insecure"}
	}
	n.Args = append([]string{"serve", "--node-id", id, "--data-dir", n.DataDir, "--api-addr", n.APIAddr,
		"--raft-addr", n.RaftAddr, "--gossip-addr", n.GossipAddr, "--fast-membership",
		"--election-timeout", c.opts.ElectionTimeout.String(), "--log-level", "info"}, auth...)
	n.Args = append(n.Args, c.opts.Extra...)
	return n
}

// AddNode prepares one more node that joins the cluster's gossip pool (it
// does not bootstrap); the leader adds it as a non-voter and promotes it.
func (c *Cluster) AddNode() *Node {
	n := c.newNode(len(c.Nodes))
	var gossip []string
	for _, other := range c.Nodes {
		gossip = append(gossip, other.GossipAddr)
	}
	n.Args = append(n.Args, "--join", strings.Join(gossip, ","))
	c.mu.Lock()
	c.Nodes = append(c.Nodes, n)
	c.mu.Unlock()
	return n
}

// NodeList returns the nodes; safe to call from other goroutines while the
// test adds nodes.
func (c *Cluster) NodeList() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.Nodes...)
}

// StartAll starts every node that is not running.
func (c *Cluster) StartAll() {
	for _, n := range c.Nodes {
		if !n.Running() {
			c.Start(n)
		}
	}
}

// Start runs the node's process (again, on the same data dir).
func (c *Cluster) Start(n *Node) {
	c.t.Helper()
	args := n.Args
	name := c.bin
	if n.netns != "" {
		args = append([]string{"netns", "exec", n.netns, c.bin}, args...)
		name = "ip"
	}
	cmd := exec.Command(name, args...)
	if len(c.opts.Env)+len(n.Env) > 0 {
		cmd.Env = append(append(os.Environ(), c.opts.Env...), n.Env...)
	}
	cmd.Stdout = n.log
	cmd.Stderr = n.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", n.ID, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done, n.err = cmd, done, nil
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(done)
	}()
}

// Kill sends SIGKILL and waits for the process to exit.
func (c *Cluster) Kill(n *Node) { c.signal(n, syscall.SIGKILL, true) }

// Stop sends SIGTERM and waits (bounded) for a clean exit.
func (c *Cluster) Stop(n *Node) error {
	c.signal(n, syscall.SIGTERM, true)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(n *Node)  { c.signal(n, syscall.SIGSTOP, false) }
func (c *Cluster) Resume(n *Node) { c.signal(n, syscall.SIGCONT, false) }

func (c *Cluster) signal(n *Node, sig syscall.Signal, wait bool) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	pid := cmd.Process.Pid
	if n.netns != "" {
		// `ip netns exec` execs the binary, so the pid is the server's.
		pid = cmd.Process.Pid
	}
	syscall.Kill(pid, sig)
	if !wait {
		return
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		<-done
	}
}

// Status asks a node for its status (with progress and state hash if asked).
func (c *Cluster) Status(n *Node, progress, hash bool) (*tollgatev1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	hc, base := c.httpClient(n)
	cl := tollgatev1connect.NewClusterServiceClient(hc, base, c.clientOptions()...)
	resp, err := cl.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{IncludeProgress: progress, IncludeStateHash: hash}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// Leader returns the running node that says it is leader in the highest
// term any node reports, or nil. (A deposed leader may still say so in an
// older term until it notices.)
func (c *Cluster) Leader() *Node {
	var leader *Node
	var leaderTerm, maxTerm uint64
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		st, err := c.Status(n, false, false)
		if err != nil {
			continue
		}
		maxTerm = max(maxTerm, st.Term)
		if st.State == "Leader" && st.Term >= leaderTerm {
			leader, leaderTerm = n, st.Term
		}
	}
	if leader == nil || leaderTerm < maxTerm {
		return nil
	}
	return leader
}

// WaitLeader polls until a leader is agreed and serves linearizable reads,
// and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) *Node {
	c.t.Helper()
	var leader *Node
	ok := Poll(timeout, 50*time.Millisecond, func() bool {
		leader = c.Leader()
		return leader != nil && c.ready(leader)
	})
	if !ok {
		c.t.Fatalf("no leader within %s", timeout)
	}
	return leader
}

// ready: the node answers a linearizable read.
func (c *Cluster) ready(n *Node) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hc, base := c.httpClient(n)
	cl := tollgatev1connect.NewBudgetServiceClient(hc, base, c.clientOptions()...)
	_, err := cl.ListBudgets(ctx, connect.NewRequest(&tollgatev1.ListBudgetsRequest{Tenant: "probe"}))
	return err == nil
}

// WaitVoters polls until the leader's configuration has exactly these voters.
func (c *Cluster) WaitVoters(timeout time.Duration, ids ...string) {
	c.t.Helper()
	want := strings.Join(slices.Sorted(slices.Values(ids)), ",")
	var got string
	ok := Poll(timeout, 100*time.Millisecond, func() bool {
		leader := c.Leader()
		if leader == nil {
			return false
		}
		st, err := c.Status(leader, false, false)
		if err != nil {
			return false
		}
		var voters []string
		for _, m := range st.Members {
			if m.Suffrage == "Voter" {
				voters = append(voters, m.Id)
			}
		}
		slices.Sort(voters)
		got = strings.Join(voters, ",")
		return got == want
	})
	if !ok {
		c.t.Fatalf("voters %q, want %q within %s", got, want, timeout)
	}
}

// WaitConverged polls until every given running node reports the same
// applied index and the same state hash, and returns them.
func (c *Cluster) WaitConverged(timeout time.Duration, nodes ...*Node) (string, uint64) {
	c.t.Helper()
	var hash string
	var index uint64
	var last string
	ok := Poll(timeout, 100*time.Millisecond, func() bool {
		hash, index = "", 0
		var seen []string
		for i, n := range nodes {
			st, err := c.Status(n, false, true)
			if err != nil {
				last = fmt.Sprintf("%s: %v", n.ID, err)
				return false
			}
			seen = append(seen, fmt.Sprintf("%s@%d=%.12s", n.ID, st.AppliedIndex, st.StateHash))
			if i == 0 {
				hash, index = st.StateHash, st.AppliedIndex
			} else if st.StateHash != hash || st.AppliedIndex != index {
				last = strings.Join(seen, " ")
				return false
			}
		}
		return true
	})
	if !ok {
		c.t.Fatalf("replicas did not converge within %s: %s", timeout, last)
	}
	return hash, index
}

// APIAddrs lists the nodes' API addresses.
func (c *Cluster) APIAddrs(nodes ...*Node) []string {
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	var out []string
	for _, n := range nodes {
		out = append(out, n.APIAddr)
	}
	return out
}

// ringLog keeps the last lines a process printed.
type ringLog struct {
	mu    sync.Mutex
	lines []string
	max   int
	part  string
}

func newRingLog(max int) *ringLog { return &ringLog{max: max} }

func (r *ringLog) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	parts := strings.Split(r.part+string(p), "\n")
	r.part = parts[len(parts)-1]
	r.lines = append(r.lines, parts[:len(parts)-1]...)
	if len(r.lines) > r.max {
		r.lines = r.lines[len(r.lines)-r.max:]
	}
	return len(p), nil
}

func (r *ringLog) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n") + r.part
}

var _ io.Writer = (*ringLog)(nil)

// clientOptions make the harness's calls carry Options.Token.
func (c *Cluster) clientOptions() []connect.ClientOption {
	if c.opts.Token == "" {
		return nil
	}
	return []connect.ClientOption{connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+c.opts.Token)
			return next(ctx, req)
		}
	}))}
}

// httpClient is the client and base URL of the harness's calls to n.
func (c *Cluster) httpClient(n *Node) (*http.Client, string) {
	if c.opts.TLS == nil {
		return http.DefaultClient, "http://" + n.APIAddr
	}
	c.httpsOnce.Do(func() {
		c.https = &http.Client{Transport: &http.Transport{TLSClientConfig: c.opts.TLS, ForceAttemptHTTP2: true}}
	})
	return c.https, "https://" + n.APIAddr
}
