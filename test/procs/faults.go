package procs

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// Faults beyond cutting links: a one-way link failure and a kill timed to
// land while a node writes a snapshot.

// Pid returns the running process's pid, or 0 when the node is not running.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	select {
	case <-n.done:
		return 0
	default:
		return n.cmd.Process.Pid
	}
}

// OneWay makes n deaf to every other node: inside n's namespace iptables
// drops, on INPUT, every packet from their IPs. What n sends still arrives
// (Delivers proves it), nothing they send reaches it; so a TCP connection
// fails to open in either direction, but bytes n writes on one already open
// still land. The test process (the bridge's IP) still reaches n. Heal
// removes the rules.
func (c *Cluster) OneWay(n *Node) {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("procs: OneWay needs Options.Netns")
	}
	for _, o := range c.NodeList() {
		if o == n {
			continue
		}
		c.net.drop(c.t, n, o)
	}
}

func (b *bridge) drop(t testing.TB, at, from *Node) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	k := [2]string{at.netns, from.Host}
	if _, done := b.drops[k]; done {
		return
	}
	if out, err := exec.Command("ip", "netns", "exec", at.netns, "iptables", "-I", "INPUT", "-s", from.Host, "-j", "DROP").CombinedOutput(); err != nil {
		t.Fatalf("iptables drop at %s from %s: %v\n%s", at.ID, from.ID, err, out)
	}
	b.drops[k] = struct{}{}
}

// Delivers reports whether packets that from sends to to's port reach to's
// namespace, even when nothing comes back (a one-way link): it counts, with
// a temporary iptables rule inside to's namespace, the packets of a TCP
// probe from from.
func (c *Cluster) Delivers(from, to *Node, port string) (bool, error) {
	if c.net == nil {
		return false, errors.New("procs: Delivers needs Options.Netns")
	}
	rule := []string{"INPUT", "-s", from.Host, "-p", "tcp", "--dport", port}
	ipt := func(args ...string) ([]byte, error) {
		return exec.Command("ip", append([]string{"netns", "exec", to.netns, "iptables"}, args...)...).CombinedOutput()
	}
	if out, err := ipt(append([]string{"-I"}, rule...)...); err != nil {
		return false, fmt.Errorf("iptables count rule at %s: %v\n%s", to.ID, err, out)
	}
	defer ipt(append([]string{"-D"}, rule...)...)
	c.Reachable(from, net.JoinHostPort(to.Host, port))
	out, err := ipt("-L", "INPUT", "-v", "-n", "-x")
	if err != nil {
		return false, fmt.Errorf("iptables count at %s: %v\n%s", to.ID, err, out)
	}
	// The counting rule's line: "<pkts> <bytes> 6 -- * * <from> 0.0.0.0/0 tcp dpt:<port>"
	// (no target).
	packets := -1
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 10 && fields[6] == from.Host && fields[len(fields)-1] == "dpt:"+port {
			if packets, err = strconv.Atoi(fields[0]); err != nil {
				return false, fmt.Errorf("iptables count at %s: %q: %v", to.ID, line, err)
			}
		}
	}
	if packets < 0 {
		return false, fmt.Errorf("iptables count at %s: no counting rule in\n%s", to.ID, out)
	}
	return packets > 0, nil
}

// KillDuringSnapshot watches n's snapshot directory (hashicorp/raft's file
// store: <data-dir>/snapshots/<name>.tmp while a snapshot is written, renamed
// to <name> when complete) and SIGKILLs n the moment a snapshot's temporary
// directory appears, then waits for the process to exit. It returns the
// snapshot's name and whether the temporary directory was still there after
// the kill (the write was really cut short). If no snapshot starts within
// timeout, n is left running and an error returned.
func (c *Cluster) KillDuringSnapshot(n *Node, timeout time.Duration) (name string, interrupted bool, err error) {
	dir := filepath.Join(n.DataDir, "snapshots")
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return "", false, fmt.Errorf("inotify: %w", err)
	}
	// A non-blocking fd becomes a pollable *os.File, so reads honour a
	// deadline.
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_MOVED_TO); err != nil {
		return "", false, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	if err := f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", false, err
	}
	buf := make([]byte, 64*1024)
	for {
		k, err := f.Read(buf)
		if err != nil {
			return "", false, fmt.Errorf("no snapshot of %s started within %s: %w", n.ID, timeout, err)
		}
		for _, created := range inotifyNames(buf[:k]) {
			if !strings.HasSuffix(created, ".tmp") {
				continue
			}
			pid := n.Pid()
			if pid == 0 {
				return "", false, fmt.Errorf("%s is not running", n.ID)
			}
			syscall.Kill(pid, syscall.SIGKILL)
			c.Kill(n) // waits for the exit
			_, statErr := os.Stat(filepath.Join(dir, created))
			return strings.TrimSuffix(created, ".tmp"), statErr == nil, nil
		}
	}
}

// inotifyNames decodes the names in a buffer of inotify events.
func inotifyNames(buf []byte) []string {
	var names []string
	for len(buf) >= syscall.SizeofInotifyEvent {
		ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[0]))
		end := syscall.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			break
		}
		name := buf[syscall.SizeofInotifyEvent:end]
		names = append(names, string(bytes.TrimRight(name, "\x00")))
		buf = buf[end:]
	}
	return names
}
