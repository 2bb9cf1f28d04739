package procs

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// bridge is a private L2 network: one bridge in the test's namespace and one
// network namespace per node with a veth into it. The test process reaches
// every node through the bridge; a node reaches the others the same way, so
// a blackhole route inside a node's namespace cuts exactly that link (TCP
// and UDP, both directions, since replies cannot be routed either).
var bridgeSeq atomic.Int64

type bridge struct {
	seq     int
	name    string
	subnet  string // "10.250.X."
	mu      sync.Mutex
	hosts   []string               // namespaces
	cuts    map[[2]string]struct{} // (namespace, peer IP) blackholed
	drops   map[[2]string]struct{} // (namespace, peer IP) dropped on INPUT (OneWay)
	hostIPs map[string]string      // namespace -> IP
	veths   []string
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func newBridge(t testing.TB) *bridge {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("procs: network namespaces need root (tests that cut links between nodes run as root in CI)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("procs: iproute2's ip is needed for network namespaces (apt-get install iproute2)")
	}
	// Names and the subnet are unique per process and per bridge: a deleted
	// namespace's veth disappears asynchronously, so names are never reused.
	pid, seq := os.Getpid(), int(bridgeSeq.Add(1))
	b := &bridge{
		seq:     seq,
		name:    fmt.Sprintf("tgb%d-%d", pid%10000, seq),
		subnet:  fmt.Sprintf("10.%d.%d.", 200+pid%50, (pid/50+seq*7)%250),
		cuts:    map[[2]string]struct{}{},
		drops:   map[[2]string]struct{}{},
		hostIPs: map[string]string{},
	}
	run(t, "ip", "link", "add", b.name, "type", "bridge")
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, ns := range b.hosts {
			exec.Command("ip", "netns", "del", ns).Run()
		}
		for _, v := range b.veths {
			exec.Command("ip", "link", "del", v).Run()
		}
		exec.Command("ip", "link", "del", b.name).Run()
		exec.Command("iptables", "-D", "FORWARD", "-i", b.name, "-o", b.name, "-j", "ACCEPT").Run()
	})
	run(t, "ip", "addr", "add", b.subnet+"1/24", "dev", b.name)
	run(t, "ip", "link", "set", b.name, "up")
	// Docker's FORWARD policy drops bridged traffic when br_netfilter is
	// loaded; let this bridge's own traffic through.
	if _, err := exec.LookPath("iptables"); err == nil {
		run(t, "iptables", "-I", "FORWARD", "-i", b.name, "-o", b.name, "-j", "ACCEPT")
	}
	return b
}

// addHost creates node i's namespace and returns it with the node's IP.
func (b *bridge) addHost(t testing.TB, id string, i int) (string, string) {
	t.Helper()
	ns := fmt.Sprintf("%s-%s", b.name, id)
	veth := fmt.Sprintf("tgv%d-%d-%d", os.Getpid()%1000, b.seq%100, i)
	ip := b.subnet + strconv.Itoa(10+i)
	run(t, "ip", "netns", "add", ns)
	b.mu.Lock()
	b.hosts = append(b.hosts, ns)
	b.hostIPs[ns] = ip
	b.veths = append(b.veths, veth)
	b.mu.Unlock()
	run(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(t, "ip", "link", "set", veth, "master", b.name, "up")
	run(t, "ip", "-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns, ip
}

// Partition cuts every link between the nodes of a and the nodes of b.
func (c *Cluster) Partition(a, b []*Node) {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("procs: Partition needs Options.Netns")
	}
	for _, x := range a {
		for _, y := range b {
			c.net.cut(c.t, x, y)
			c.net.cut(c.t, y, x)
		}
	}
}

// Isolate cuts n off from every other node (the test still reaches it).
func (c *Cluster) Isolate(n *Node) {
	var others []*Node
	for _, o := range c.Nodes {
		if o != n {
			others = append(others, o)
		}
	}
	c.Partition([]*Node{n}, others)
}

// Heal removes every cut (and every OneWay drop).
func (c *Cluster) Heal() {
	c.t.Helper()
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	for k := range c.net.cuts {
		run(c.t, "ip", "-n", k[0], "route", "del", "blackhole", k[1]+"/32")
		delete(c.net.cuts, k)
	}
	for k := range c.net.drops {
		run(c.t, "ip", "netns", "exec", k[0], "iptables", "-D", "INPUT", "-s", k[1], "-j", "DROP")
		delete(c.net.drops, k)
	}
}

func (b *bridge) cut(t testing.TB, from, to *Node) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	k := [2]string{from.netns, to.Host}
	if _, done := b.cuts[k]; done {
		return
	}
	run(t, "ip", "-n", from.netns, "route", "add", "blackhole", to.Host+"/32")
	b.cuts[k] = struct{}{}
}

// Reachable probes a TCP connection from inside from's namespace to addr
// (host:port), to check that a cut really cuts.
func (c *Cluster) Reachable(from *Node, addr string) bool {
	host, port, _ := strings.Cut(addr, ":")
	err := exec.Command("ip", "netns", "exec", from.netns, "timeout", "2", "bash", "-c",
		fmt.Sprintf("</dev/tcp/%s/%s", host, port)).Run()
	return err == nil
}
