package main

// `tollgate dev-cluster`: a local cluster of `tollgate serve` processes for
// machines without Docker. The children are this same binary; their output
// is passed through line by line with a "[n1] " prefix.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

const (
	// devNodesMax bounds --nodes; devPortStride separates the nodes' ports
	// (node i listens on base+stride*(i-1) for the API, +1 Raft, +2 gossip).
	devNodesMax   = 5
	devPortStride = 100
	// devReadyTimeout bounds the wait for a leader with every node a voter.
	devReadyTimeout = 30 * time.Second
	// devPollInterval is how often the start-up wait asks for Status.
	devPollInterval = 100 * time.Millisecond
	// devStopTimeout is how long a node may take to stop after SIGTERM
	// before it is killed; longer than serve's default --shutdown-timeout.
	devStopTimeout = 20 * time.Second
	// devLineBytesMax bounds a child's output line held while waiting for
	// its newline.
	devLineBytesMax = 64 << 10
)

type devClusterFlags struct {
	dataDir  string
	basePort int
	nodes    int
	logLevel string
}

func init() { clientCommands = append(clientCommands, newDevClusterCommand) }

func newDevClusterCommand() *cobra.Command {
	f := &devClusterFlags{}
	cmd := &cobra.Command{
		Use:   "dev-cluster",
		Short: "Run a local cluster of 'tollgate serve' processes (3 nodes by default; no Docker needed)",
		Long: `Run a cluster of --nodes 'tollgate serve' processes on 127.0.0.1, for
development and trying out failover. Node n<i> keeps its data in
<--data-dir>/n<i> and listens on --base-port + 100*(i-1) for the API, the
next port for Raft and the one after for gossip: with the defaults n1 is
7070/7071/7072, n2 7170/7171/7172, n3 7270/7271/7272.

The nodes find each other through gossip and bootstrap together. Once there
is a leader and every node is a voter, the API addresses are printed. Each
node's output is shown prefixed with its id ("[n1] "). Ctrl-C (or SIGTERM)
stops every node gracefully; if a node exits on its own, the others are
stopped and the command fails.

The data stays in --data-dir: the next run picks up the same cluster. Delete
the directory to start afresh (and after changing --nodes). The nodes have
no authentication, and do not read TOLLGATE_* environment variables.`,
		Example: `  tollgate dev-cluster
  tollgate dev-cluster --base-port 9000 --data-dir /tmp/tollgate-dev --log-level warn`,
		Args: argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error { return runDevCluster(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", filepath.Join("data", "dev-cluster"), "directory holding each node's data directory (n1, n2, ...)")
	fl.IntVar(&f.basePort, "base-port", 7070, "n1's API port; node i uses base+100*(i-1) for the API, +1 for Raft, +2 for gossip")
	fl.IntVar(&f.nodes, "nodes", 3, fmt.Sprintf("how many nodes, 1 to %d", devNodesMax))
	fl.StringVar(&f.logLevel, "log-level", "info", "the nodes' log level: debug, info, warn or error")
	return withUsageErrors(cmd)
}

// devNode is one child process.
type devNode struct {
	id, apiAddr, raftAddr, gossipAddr, dataDir string

	cmd *exec.Cmd
	// exited is closed once the process has been waited for; waitErr is
	// its exit status then.
	exited  chan struct{}
	waitErr error
}

func (n *devNode) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

func (f *devClusterFlags) check(cmd *cobra.Command) error {
	if f.nodes < 1 || f.nodes > devNodesMax {
		return usageErrorf(cmd, "--nodes %d: want 1 to %d", f.nodes, devNodesMax)
	}
	if top := f.basePort + devPortStride*(f.nodes-1) + 2; f.basePort < 1 || top > 65535 {
		return usageErrorf(cmd, "--base-port %d: the nodes need ports %d to %d; want 1 to %d",
			f.basePort, f.basePort, top, 65535-devPortStride*(f.nodes-1)-2)
	}
	if _, err := newLogger(f.logLevel, "text"); err != nil {
		return usageErrorf(cmd, "%v", err)
	}
	return nil
}

// devNodes lays out the nodes' ids, addresses and data directories.
func (f *devClusterFlags) devNodes() []*devNode {
	nodes := make([]*devNode, f.nodes)
	for i := range nodes {
		port := f.basePort + devPortStride*i
		addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
		id := fmt.Sprintf("n%d", i+1)
		nodes[i] = &devNode{id: id, apiAddr: addr(port), raftAddr: addr(port + 1), gossipAddr: addr(port + 2),
			dataDir: filepath.Join(f.dataDir, id), exited: make(chan struct{})}
	}
	return nodes
}

func runDevCluster(cmd *cobra.Command, f *devClusterFlags) error {
	if err := f.check(cmd); err != nil {
		return err
	}
	nodes := f.devNodes()
	if err := checkPortsFree(nodes); err != nil {
		return localError("%v; choose another --base-port", err)
	}
	self, err := os.Executable()
	if err != nil {
		return localError("find this program to start the nodes: %v", err)
	}
	// Catch signals before any child starts, so an early Ctrl-C stops them.
	ctx, stopSignals := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	out := &devOutput{stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr()}
	exited := make(chan *devNode, len(nodes))
	for i, n := range nodes {
		if err := startDevNode(self, n, nodes, f, out, exited); err != nil {
			stopDevNodes(nodes[:i], out)
			return localError("start %s: %v", n.id, err)
		}
	}

	readyCtx, cancelReady := context.WithTimeout(ctx, devReadyTimeout)
	defer cancelReady()
	ready := make(chan error, 1)
	var leader string
	go func() {
		var err error
		leader, err = waitDevClusterReady(readyCtx, nodes)
		ready <- err
	}()
	select {
	case err := <-ready:
		if ctx.Err() != nil { // interrupted while starting
			stopDevNodes(nodes, out)
			return nil
		}
		if err != nil {
			stopDevNodes(nodes, out)
			return localError("the cluster did not become ready within %s: %v", devReadyTimeout, err)
		}
	case n := <-exited:
		return devNodeExited(ctx, n, nodes, out)
	case <-ctx.Done():
		<-ready
		stopDevNodes(nodes, out)
		return nil
	}
	printDevClusterReady(out, nodes, leader, f.dataDir)

	select {
	case n := <-exited:
		return devNodeExited(ctx, n, nodes, out)
	case <-ctx.Done():
		stopDevNodes(nodes, out)
		return nil
	}
}

// devNodeExited handles a child that exited by itself: unless we are
// stopping anyway (Ctrl-C reaches the children too), that is a failure.
func devNodeExited(ctx context.Context, n *devNode, nodes []*devNode, out *devOutput) error {
	stopDevNodes(nodes, out)
	if ctx.Err() != nil {
		return nil
	}
	status := "exit status 0"
	if n.waitErr != nil {
		status = n.waitErr.Error()
	}
	return localError("node %s exited early (%s; its output is above, prefixed [%s]); stopped the other nodes", n.id, status, n.id)
}

// checkPortsFree fails early, with the port named, rather than let a node
// fail to bind while the others start.
func checkPortsFree(nodes []*devNode) error {
	for _, n := range nodes {
		for _, p := range []struct{ what, network, addr string }{
			{"API", "tcp", n.apiAddr}, {"Raft", "tcp", n.raftAddr}, {"gossip", "tcp", n.gossipAddr}, {"gossip", "udp", n.gossipAddr},
		} {
			var c io.Closer
			var err error
			if p.network == "udp" {
				c, err = net.ListenPacket(p.network, p.addr)
			} else {
				c, err = net.Listen(p.network, p.addr)
			}
			if err != nil {
				return fmt.Errorf("%s's %s port %s (%s) is not free: %v", n.id, p.what, p.addr, p.network, err)
			}
			c.Close()
		}
	}
	return nil
}

// startDevNode starts n as `serve`, joined to the other nodes' gossip
// addresses; exited receives n once it has exited.
func startDevNode(self string, n *devNode, nodes []*devNode, f *devClusterFlags, out *devOutput, exited chan<- *devNode) error {
	if err := os.MkdirAll(n.dataDir, 0o750); err != nil {
		return err
	}
	args := []string{"serve", "--insecure", "--node-id", n.id, "--data-dir", n.dataDir,
		"--api-addr", n.apiAddr, "--raft-addr", n.raftAddr, "--gossip-addr", n.gossipAddr,
		"--bootstrap-expect", strconv.Itoa(len(nodes)), "--log-level", f.logLevel}
	var others []string
	for _, o := range nodes {
		if o != n {
			others = append(others, o.gossipAddr)
		}
	}
	if len(others) > 0 {
		args = append(args, "--join", strings.Join(others, ","))
	}
	n.cmd = exec.Command(self, args...)
	n.cmd.Env = withoutTollgateEnv(os.Environ())
	stdout, stderr := out.prefixed(out.stdout, n.id), out.prefixed(out.stderr, n.id)
	n.cmd.Stdout, n.cmd.Stderr = stdout, stderr
	if err := n.cmd.Start(); err != nil {
		return err
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		stdout.flush()
		stderr.flush()
		close(n.exited)
		exited <- n
	}()
	return nil
}

// withoutTollgateEnv drops TOLLGATE_* variables: every node is set up by its
// flags alone, and e.g. TOLLGATE_API_ADVERTISE would give all of them one
// address.
func withoutTollgateEnv(env []string) []string {
	var kept []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TOLLGATE_") {
			kept = append(kept, kv)
		}
	}
	return kept
}

// waitDevClusterReady polls every node's Status until one of them is the
// leader with every node a voter, and returns the leader's id. The error
// says what was seen last.
func waitDevClusterReady(ctx context.Context, nodes []*devNode) (string, error) {
	clients := make([]*client.Client, len(nodes))
	for i, n := range nodes {
		c, err := client.New([]string{n.apiAddr}, client.WithoutRetries(), client.WithRequestTimeout(time.Second))
		if err != nil {
			return "", err
		}
		defer c.Close()
		clients[i] = c
	}
	tick := time.NewTicker(devPollInterval)
	defer tick.Stop()
	seen := "no node answered"
	for {
		for i, c := range clients {
			resp, err := c.Cluster.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{}))
			if err != nil {
				continue
			}
			st := resp.Msg
			voters := 0
			for _, m := range st.Members {
				if m.Suffrage == "Voter" {
					voters++
				}
			}
			if st.State == "Leader" && voters == len(nodes) {
				return st.NodeId, nil
			}
			seen = fmt.Sprintf("%s is %s, leader %q, %d voter(s) of %d", nodes[i].id, st.State, st.LeaderId, voters, len(nodes))
		}
		select {
		case <-ctx.Done():
			return "", errors.New(seen)
		case <-tick.C:
		}
	}
}

func printDevClusterReady(out *devOutput, nodes []*devNode, leader, dataDir string) {
	var b strings.Builder
	fmt.Fprintf(&b, "dev cluster ready: %d node(s), leader %s\n", len(nodes), leader)
	for _, n := range nodes {
		fmt.Fprintf(&b, "  %s  API %s  Raft %s  gossip %s  data %s\n", n.id, n.apiAddr, n.raftAddr, n.gossipAddr, n.dataDir)
	}
	fmt.Fprintf(&b, "try:  tollgate cluster status --addr %s\n", nodes[0].apiAddr)
	fmt.Fprintf(&b, "Ctrl-C stops the cluster; the data stays in %s.\n", dataDir)
	out.write(out.stdout, b.String())
}

// stopDevNodes sends SIGTERM to the running nodes and waits for them; a
// node still running after devStopTimeout is killed.
func stopDevNodes(nodes []*devNode, out *devOutput) {
	var running []string
	for _, n := range nodes {
		if n.running() {
			n.cmd.Process.Signal(syscall.SIGTERM) // fails only if it has just exited
			running = append(running, n.id)
		}
	}
	if len(running) > 0 {
		out.write(out.stderr, fmt.Sprintf("stopping %s\n", strings.Join(running, ", ")))
	}
	deadline := time.NewTimer(devStopTimeout)
	defer deadline.Stop()
	for _, n := range nodes {
		select {
		case <-n.exited:
			continue
		case <-deadline.C:
			// Fired: everything still running is past the deadline.
			deadline.Reset(0)
		}
		out.write(out.stderr, fmt.Sprintf("%s did not stop within %s; killing it\n", n.id, devStopTimeout))
		n.cmd.Process.Kill()
		<-n.exited
	}
}

// devOutput serializes the lines of all children and our own messages, so
// lines never interleave mid-way.
type devOutput struct {
	mu             sync.Mutex
	stdout, stderr io.Writer
}

func (o *devOutput) write(w io.Writer, s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	io.WriteString(w, s)
}

func (o *devOutput) prefixed(w io.Writer, id string) *prefixWriter {
	return &prefixWriter{out: o, w: w, prefix: "[" + id + "] "}
}

// prefixWriter writes each complete line of a child's output with the
// child's prefix. Writes to our own output that fail are dropped: a child
// must not stop because our terminal went away.
type prefixWriter struct {
	out     *devOutput
	w       io.Writer
	prefix  string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.emit(p.partial[:i])
		p.partial = p.partial[i+1:]
	}
	if len(p.partial) > devLineBytesMax {
		p.emit(p.partial)
		p.partial = nil
	}
	return len(b), nil
}

// flush writes the last line if it had no newline.
func (p *prefixWriter) flush() {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	if len(p.partial) > 0 {
		p.emit(p.partial)
		p.partial = nil
	}
}

func (p *prefixWriter) emit(line []byte) {
	io.WriteString(p.w, p.prefix+string(line)+"\n")
}
