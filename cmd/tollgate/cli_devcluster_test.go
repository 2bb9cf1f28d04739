package main

// `tollgate dev-cluster` runs as a real process with real children.

import (
	"bufio"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

// devClusterWaitMax bounds the start-up and the shutdown of a dev cluster.
const devClusterWaitMax = 40 * time.Second

// freeDevBasePort picks a base port in 20000-40000 whose nodes' ports are
// all free now (TCP, and UDP for gossip).
func freeDevBasePort(t *testing.T, nodes int) int {
	t.Helper()
	for range 20 {
		f := &devClusterFlags{basePort: 20000 + rand.IntN(20000), nodes: nodes}
		if checkPortsFree(f.devNodes()) == nil {
			return f.basePort
		}
	}
	t.Fatal("no free base port found in 20 tries")
	return 0
}

// devClusterProc is a running `tollgate dev-cluster`.
type devClusterProc struct {
	cmd  *exec.Cmd
	done chan error

	mu     sync.Mutex
	stdout strings.Builder
	stderr strings.Builder
	// ready is closed once the ready summary has been printed.
	ready chan struct{}
}

func startDevCluster(t *testing.T, args ...string) *devClusterProc {
	t.Helper()
	cmd := exec.Command(tollgateBinary(t), append([]string{"dev-cluster"}, args...)...)
	cmd.Env = append(os.Environ(), "TOLLGATE_API_ADVERTISE=127.0.0.1:1") // must not reach the nodes
	p := &devClusterProc{cmd: cmd, done: make(chan error, 1), ready: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var copied sync.WaitGroup
	copied.Go(func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.stdout.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			// The last line of the summary that starts "dev cluster ready".
			if strings.HasPrefix(sc.Text(), "Ctrl-C stops the cluster") {
				close(p.ready)
			}
		}
	})
	copied.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	})
	go func() {
		copied.Wait() // Wait closes the pipes: read them to the end first
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *devClusterProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "stdout:\n" + p.stdout.String() + "stderr:\n" + p.stderr.String()
}

// wait returns the exit code, failing the test after devClusterWaitMax.
func (p *devClusterProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(devClusterWaitMax):
		t.Fatalf("dev-cluster did not exit\n%s", p.output())
		return 0
	}
}

// TestDevCluster: three serve processes form a cluster with three voters;
// SIGTERM stops them all and dev-cluster exits 0.
func TestDevCluster(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	base := freeDevBasePort(t, 3)
	p := startDevCluster(t, "--data-dir", dir, "--base-port", strconv.Itoa(base), "--log-level", "warn")
	select {
	case <-p.ready:
	case <-p.done:
		t.Fatalf("dev-cluster exited before it was ready (exit %d)\n%s", p.cmd.ProcessState.ExitCode(), p.output())
	case <-time.After(devClusterWaitMax):
		t.Fatalf("dev-cluster not ready after %s\n%s", devClusterWaitMax, p.output())
	}
	nodes := (&devClusterFlags{dataDir: dir, basePort: base, nodes: 3}).devNodes()
	out := p.output()
	if !regexp.MustCompile(`(?m)^dev cluster ready: 3 node\(s\), leader n[123]$`).MatchString(out) {
		t.Errorf("no ready line\n%s", out)
	}
	for _, n := range nodes {
		// Each child's banner, prefixed, and its line in the ready summary.
		if !strings.Contains(out, "["+n.id+"]   API   http://"+n.apiAddr) ||
			!strings.Contains(out, "  "+n.id+"  API "+n.apiAddr+"  Raft "+n.raftAddr+"  gossip "+n.gossipAddr+"  data "+n.dataDir+"\n") {
			t.Errorf("no banner or summary line for %s at %s\n%s", n.id, n.apiAddr, out)
		}
	}

	r := runCLI(t, "cluster", "status", "--addr", nodes[2].apiAddr, "--output", "json")
	var st tollgatev1.StatusResponse
	decodeCLIJSON(t, r, &st)
	voters := 0
	for _, m := range st.Members {
		for _, n := range nodes {
			if m.Suffrage == "Voter" && m.Id == n.id && m.ApiAddr == n.apiAddr && m.RaftAddr == n.raftAddr {
				voters++
			}
		}
	}
	if r.code != 0 || st.LeaderId == "" || voters != 3 || len(st.Members) != 3 {
		t.Fatalf("status of the dev cluster: exit %d, %v", r.code, &st)
	}
	if r := runCLI(t, "budget", "create", "llm", "--amount", "5", "--currency", "USD", "--tenant", "dev", "--addr", nodes[1].apiAddr); r.code != 0 {
		t.Fatalf("create on the dev cluster: exit %d: %s", r.code, r.stderr)
	}
	for _, n := range nodes {
		if _, err := os.Stat(filepath.Join(n.dataDir, "raft.db")); err != nil {
			t.Errorf("%s has no data in %s: %v", n.id, n.dataDir, err)
		}
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.output())
	}
	if !strings.Contains(p.output(), "stopping n1, n2, n3\n") {
		t.Errorf("no stopping message\n%s", p.output())
	}
	// The children are gone with it: their ports are free again.
	if err := checkPortsFree(nodes); err != nil {
		t.Errorf("after dev-cluster exited: %v", err)
	}
}

// TestDevClusterNodeFails: a node that cannot start stops the others, and
// dev-cluster exits 1 naming it.
func TestDevClusterNodeFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	// n2's raft.db is a directory: its Raft store cannot open.
	if err := os.MkdirAll(filepath.Join(dir, "n2", "raft.db"), 0o750); err != nil {
		t.Fatal(err)
	}
	base := freeDevBasePort(t, 3)
	p := startDevCluster(t, "--data-dir", dir, "--base-port", strconv.Itoa(base), "--log-level", "warn")
	if code := p.wait(t); code != exitFailure {
		t.Fatalf("exit %d, want 1\n%s", code, p.output())
	}
	out := p.output()
	if !strings.Contains(out, "[n2] error: node: open raft.db") ||
		!strings.Contains(out, "error: node n2 exited early (exit status 1; its output is above, prefixed [n2]); stopped the other nodes\n") {
		t.Errorf("no clear message about n2\n%s", out)
	}
	if err := checkPortsFree((&devClusterFlags{dataDir: dir, basePort: base, nodes: 3}).devNodes()); err != nil {
		t.Errorf("after dev-cluster exited: %v", err)
	}
}

// TestDevClusterBadFlags: flag errors are usage errors (exit 2), before
// anything starts.
func TestDevClusterBadFlags(t *testing.T) {
	usage := "\nRun 'tollgate dev-cluster --help' for usage.\n"
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--nodes", "0"}, "error: --nodes 0: want 1 to 5" + usage},
		{[]string{"--nodes", "6"}, "error: --nodes 6: want 1 to 5" + usage},
		{[]string{"--base-port", "65500"}, "error: --base-port 65500: the nodes need ports 65500 to 65702; want 1 to 65333" + usage},
		{[]string{"--base-port", "0"}, "error: --base-port 0: the nodes need ports 0 to 202; want 1 to 65333" + usage},
		{[]string{"--log-level", "loud"}, `error: --log-level "loud": want debug, info, warn or error` + usage},
		{[]string{"extra"}, `error: "tollgate dev-cluster" takes no arguments; got ["extra"]` + usage},
	} {
		wantCLIError(t, runCLI(t, append([]string{"dev-cluster"}, tc.args...)...), exitUsage, tc.stderr, false)
	}
}
