package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/client"
	"github.com/tollgate/tollgate/embed"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

// The cluster commands run in-process against a real 3-node cluster in this
// process (Raft, gossip and the API on loopback).

// clusterWaitMax bounds every wait for the cluster to reach a state.
const clusterWaitMax = 20 * time.Second

// testCluster is a running cluster, by node id.
type testCluster struct {
	t       *testing.T
	servers map[string]*embed.Server
	clients map[string]*client.Client
}

// startTestCluster starts size nodes that bootstrap together, each joined
// to the others' gossip addresses. The gossip ports are picked here, so the
// join lists can be written before the nodes start (a node's own
// GossipAddr() races with its gossip updates); Raft and the API use port 0.
func startTestCluster(t *testing.T, size int) *testCluster {
	t.Helper()
	cl := &testCluster{t: t, servers: map[string]*embed.Server{}, clients: map[string]*client.Client{}}
	// The data dirs' parent is made before close is registered, so the
	// servers are shut down before their directories are removed.
	base := t.TempDir()
	t.Cleanup(cl.close)
	gossipAddrs := make([]string, size)
	for i := range gossipAddrs {
		gossipAddrs[i] = freeGossipAddr(t)
	}
	for i := range size {
		id := fmt.Sprintf("n%d", i+1)
		var others []string
		for j, a := range gossipAddrs {
			if j != i {
				others = append(others, a)
			}
		}
		// Another process may take a picked port before memberlist binds
		// it; then try another.
		var s *embed.Server
		var err error
		for attempt := range startAttemptsMax {
			s, err = embed.Start(embed.Config{
				NodeID:            id,
				DataDir:           filepath.Join(base, fmt.Sprintf("%s-%d", id, attempt)),
				APIAddr:           "127.0.0.1:0",
				RaftAddr:          "127.0.0.1:0",
				GossipAddr:        gossipAddrs[i],
				BootstrapExpect:   size,
				Join:              others,
				FastGossip:        true,
				ReconcileInterval: 200 * time.Millisecond,
				ElectionTimeout:   300 * time.Millisecond,
				RaftLogLevel:      "off",
				Version:           "test",
				Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err == nil {
				break
			}
			gossipAddrs[i] = freeGossipAddr(t)
		}
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		cl.servers[id] = s
		c, err := client.New([]string{s.APIAddr()}, client.WithoutRetries(), client.WithRequestTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		cl.clients[id] = c
	}
	return cl
}

// startAttemptsMax bounds the tries to start one node on fresh ports.
const startAttemptsMax = 5

// freeGossipAddr returns a loopback address whose port is free for both TCP
// and UDP (memberlist binds both).
func freeGossipAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both TCP and UDP in 20 tries")
	return ""
}

func (cl *testCluster) close() {
	var wg sync.WaitGroup
	for _, s := range cl.servers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s.Close(ctx)
		})
	}
	wg.Wait()
	for _, c := range cl.clients {
		c.Close()
	}
}

func (cl *testCluster) addr(id string) string { return cl.servers[id].APIAddr() }

// status asks node id for its view (nil if it does not answer).
func (cl *testCluster) status(id string, req *tollgatev1.StatusRequest) *tollgatev1.StatusResponse {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := cl.clients[id].Cluster.Status(ctx, connect.NewRequest(req))
	if err != nil {
		return nil
	}
	return resp.Msg
}

// waitStable polls until every voter agrees on one leader, the leader's
// configuration has exactly the given voters, and every one of them has
// applied all the leader has committed. It returns the leader.
func (cl *testCluster) waitStable(voters ...string) string {
	cl.t.Helper()
	var leader, seen string
	ok := poll(clusterWaitMax, 20*time.Millisecond, func() bool {
		leader = ""
		for id := range cl.servers {
			if !slices.Contains(voters, id) {
				continue
			}
			st := cl.status(id, &tollgatev1.StatusRequest{})
			if st == nil || st.LeaderId == "" || (leader != "" && st.LeaderId != leader) {
				seen = fmt.Sprintf("%s answers %v", id, st)
				return false
			}
			leader = st.LeaderId
		}
		st := cl.status(leader, &tollgatev1.StatusRequest{IncludeProgress: true})
		if st == nil || st.State != "Leader" {
			seen = fmt.Sprintf("leader %s answers %v", leader, st)
			return false
		}
		var got []string
		for _, m := range st.Members {
			if m.Suffrage == "Voter" && m.Reachable && m.Lag == 0 {
				got = append(got, m.Id)
			}
		}
		seen = fmt.Sprintf("leader %s: caught-up voters %v of %v", leader, got, st.Members)
		return len(got) == len(voters) && len(st.Members) == len(voters) && !slices.ContainsFunc(voters, func(id string) bool { return !slices.Contains(got, id) })
	})
	if !ok {
		cl.t.Fatalf("no leader with voters %v after %s; last: %s", voters, clusterWaitMax, seen)
	}
	return leader
}

// followers are the ids of voters other than leader, in id order.
func followers(voters []string, leader string) []string {
	var out []string
	for _, id := range voters {
		if id != leader {
			out = append(out, id)
		}
	}
	return out
}

// TestClusterCLI runs the cluster commands, one after another, against one
// 3-node cluster: status, forwarded writes, snapshot save and restore,
// leadership transfer, and last the removal of a server.
func TestClusterCLI(t *testing.T) {
	cl := startTestCluster(t, 3)
	voters := []string{"n1", "n2", "n3"}
	leader := cl.waitStable(voters...)

	t.Run("status", func(t *testing.T) { testClusterStatus(t, cl, voters, leader) })
	t.Run("snapshot-save-restore", func(t *testing.T) { testSnapshotSaveRestore(t, cl, leader, followers(voters, leader)[0]) })
	t.Run("transfer-leader", func(t *testing.T) {
		leader = testTransferLeader(t, cl, voters, leader, followers(voters, leader)[0])
	})
	t.Run("remove", func(t *testing.T) { testRemoveServer(t, cl, voters, leader, followers(voters, leader)[1]) })
}

func testClusterStatus(t *testing.T, cl *testCluster, voters []string, leader string) {
	follower := followers(voters, leader)[0]
	// A follower asks every member for its progress too.
	r := runCLI(t, "cluster", "status", "--addr", cl.addr(follower), "--output", "json")
	var st tollgatev1.StatusResponse
	decodeCLIJSON(t, r, &st)
	if r.code != 0 || st.NodeId != follower || st.State != "Follower" || st.LeaderId != leader ||
		st.LeaderApiAddr != cl.addr(leader) || len(st.Members) != 3 || len(st.GossipOnly) != 0 || st.StateHash != "" {
		t.Fatalf("status json: exit %d, %v", r.code, &st)
	}
	leaders := 0
	for _, m := range st.Members {
		if m.Leader {
			leaders++
		}
		if m.Suffrage != "Voter" || m.Leader != (m.Id == leader) || !m.Reachable || m.AppliedIndex == 0 ||
			m.ApiAddr != cl.addr(m.Id) || m.Gossip != "alive" || m.Version != "test" {
			t.Errorf("member %v", m)
		}
	}
	if leaders != 1 {
		t.Errorf("%d members marked leader, want 1", leaders)
	}

	r = runCLI(t, "cluster", "status", "--addr", cl.addr(leader))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("status table: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	fields, rows := parseClusterStatusTable(t, r.stdout)
	if fields["node"] != leader || fields["state"] != "Leader" || fields["leader"] != leader ||
		fields["leader api addr"] != cl.addr(leader) || fields["term"] == "" || fields["commit index"] == "" || fields["applied index"] == "" {
		t.Errorf("status fields %v\n%s", fields, r.stdout)
	}
	if len(rows) != 3 {
		t.Fatalf("%d member rows, want 3:\n%s", len(rows), r.stdout)
	}
	for _, row := range rows {
		id := row["ID"]
		wantLeader, wantState := "", "Follower"
		if id == leader {
			wantLeader, wantState = "*", "Leader"
		}
		_, lagErr := strconv.ParseUint(row["LAG"], 10, 64)
		applied, appliedErr := strconv.ParseUint(row["APPLIED"], 10, 64)
		if !slices.Contains(voters, id) || row["SUFFRAGE"] != "Voter" || row["LEADER"] != wantLeader || row["STATE"] != wantState ||
			row["GOSSIP"] != "alive" || row["API ADDR"] != cl.addr(id) || row["RAFT ADDR"] == "" ||
			lagErr != nil || appliedErr != nil || applied == 0 || row["REACHABLE"] != "yes" || row["VERSION"] != "test" {
			t.Errorf("member row %v\n%s", row, r.stdout)
		}
	}

	r = runCLI(t, "cluster", "status", "--addr", cl.addr(follower), "--state-hash", "--output", "json")
	decodeCLIJSON(t, r, &st)
	if r.code != 0 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(st.StateHash) {
		t.Fatalf("status --state-hash: exit %d, state hash %q", r.code, st.StateHash)
	}
}

// parseClusterStatusTable splits `cluster status` output into its
// key/value fields and member rows (cells cut at the header's columns, so
// empty cells are seen as empty).
func parseClusterStatusTable(t *testing.T, out string) (map[string]string, []map[string]string) {
	t.Helper()
	fields := map[string]string{}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	i := 0
	for ; i < len(lines) && lines[i] != ""; i++ {
		key, value, ok := cutColumns(lines[i])
		if !ok {
			t.Fatalf("field line %q\n%s", lines[i], out)
		}
		fields[key] = value
	}
	if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "ID ") {
		t.Fatalf("no member table after the fields:\n%s", out)
	}
	header := lines[i+1]
	names := regexp.MustCompile(`\S+( \S+)*`).FindAllStringIndex(header, -1)
	var rows []map[string]string
	for _, line := range lines[i+2:] {
		if line == "" {
			break
		}
		row := map[string]string{}
		for c, span := range names {
			end := len(line)
			if c+1 < len(names) {
				end = min(names[c+1][0], len(line))
			}
			row[header[span[0]:span[1]]] = strings.TrimSpace(line[min(span[0], len(line)):end])
		}
		rows = append(rows, row)
	}
	return fields, rows
}

// cutColumns splits "key with spaces   value" at the first run of 2+ spaces.
func cutColumns(line string) (string, string, bool) {
	loc := regexp.MustCompile(` {2,}`).FindStringIndex(line)
	if loc == nil {
		return "", "", false
	}
	return line[:loc[0]], line[loc[1]:], true
}

var savedLine = regexp.MustCompile(`^saved (\d+) bytes at applied index (\d+) to (.+)\n$`)

func testSnapshotSaveRestore(t *testing.T, cl *testCluster, leader, follower string) {
	via := []string{"--addr", cl.addr(follower)}
	budget := func(args ...string) cliResult {
		return runCLI(t, append(append([]string{"budget"}, args...), "--tenant", "snap", "--addr", cl.addr(follower))...)
	}
	spent := func() string {
		r := budget("get", "llm", "--output", "json")
		var got tollgatev1.GetBudgetResponse
		decodeCLIJSON(t, r, &got)
		return got.Spent
	}
	// Writes through a follower are forwarded to the leader.
	if r := budget("create", "llm", "--amount", "100", "--currency", "USD"); r.code != 0 {
		t.Fatalf("create via follower: exit %d: %s", r.code, r.stderr)
	}
	if r := budget("consume", "llm", "--amount", "10"); r.code != 0 || !strings.HasPrefix(r.stdout, "ALLOWED\n") {
		t.Fatalf("consume via follower: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}

	// The streams go to the leader, found through the follower.
	file := filepath.Join(t.TempDir(), "backup.snap")
	r := runCLI(t, append([]string{"cluster", "snapshot", "save", file}, via...)...)
	m := savedLine.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || m[3] != file || r.stderr != "" {
		t.Fatalf("snapshot save: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(file)
	if err != nil || strconv.Itoa(len(data)) != m[1] {
		t.Fatalf("snapshot file: %d bytes (%v), save said %s", len(data), err, m[1])
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", file, err)
	}
	if info, _ := os.Stat(file); info.Mode().Perm() != 0o600 {
		t.Errorf("snapshot file mode %v, want 0600 (it holds every tenant's data)", info.Mode().Perm())
	}
	// To stdout: the same bytes (nothing was written since), the summary on stderr.
	r = runCLI(t, append([]string{"cluster", "snapshot", "save", "-", "--output", "json"}, via...)...)
	var saved struct{ File, Bytes, AppliedIndex string }
	if err := json.Unmarshal([]byte(r.stderr), &saved); err != nil || r.code != 0 {
		t.Fatalf("snapshot save -: exit %d, summary %q: %v", r.code, r.stderr, err)
	}
	if r.stdout != string(data) || saved != (struct{ File, Bytes, AppliedIndex string }{"-", m[1], m[2]}) {
		t.Fatalf("snapshot save - wrote %d bytes, summary %+v; the file has %s bytes at index %s", len(r.stdout), saved, m[1], m[2])
	}

	if r := budget("consume", "llm", "--amount", "25"); r.code != 0 {
		t.Fatalf("consume: exit %d: %s", r.code, r.stderr)
	}
	if got := spent(); got != "35.00" {
		t.Fatalf("spent %s before the restore, want 35.00", got)
	}
	r = runCLI(t, append([]string{"cluster", "snapshot", "restore", file, "--output", "json"}, via...)...)
	var restored tollgatev1.SnapshotRestoreResponse
	decodeCLIJSON(t, r, &restored)
	if r.code != 0 || restored.AppliedIndex == 0 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(restored.StateHash) {
		t.Fatalf("snapshot restore: exit %d, %v", r.code, &restored)
	}
	if got := spent(); got != "10.00" {
		t.Fatalf("spent %s after restoring the snapshot, want the saved 10.00", got)
	}
	r = runCLI(t, "cluster", "status", "--state-hash", "--addr", cl.addr(leader), "--output", "json")
	var st tollgatev1.StatusResponse
	decodeCLIJSON(t, r, &st)
	if st.StateHash != restored.StateHash || st.AppliedIndex != restored.AppliedIndex {
		t.Fatalf("leader's state hash %s at %d, restore reported %s at %d", st.StateHash, st.AppliedIndex, restored.StateHash, restored.AppliedIndex)
	}
	// Every replica reaches the restored state.
	for id := range cl.servers {
		var seen *tollgatev1.StatusResponse
		if !poll(clusterWaitMax, 20*time.Millisecond, func() bool {
			seen = cl.status(id, &tollgatev1.StatusRequest{IncludeStateHash: true})
			return seen != nil && seen.AppliedIndex == restored.AppliedIndex
		}) {
			t.Fatalf("%s did not reach the restored index %d: %v", id, restored.AppliedIndex, seen)
		}
		if seen.StateHash != restored.StateHash {
			t.Errorf("%s: state hash %s at the restored index, want %s", id, seen.StateHash, restored.StateHash)
		}
	}

	// From stdin, the bytes saved to stdout restore the same state.
	if r := budget("consume", "llm", "--amount", "5"); r.code != 0 {
		t.Fatalf("consume: exit %d: %s", r.code, r.stderr)
	}
	r = runCLIWithStdin(t, strings.NewReader(string(data)), append([]string{"cluster", "snapshot", "restore", "-"}, via...)...)
	if r.code != 0 || !regexp.MustCompile(`^bytes +`+m[1]+"\napplied index +\\d+\nstate hash +"+restored.StateHash+"\n$").MatchString(r.stdout) {
		t.Fatalf("snapshot restore -: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := spent(); got != "10.00" {
		t.Fatalf("spent %s after restoring from stdin, want 10.00", got)
	}

	// A damaged snapshot is refused and changes nothing.
	bad := filepath.Join(t.TempDir(), "bad.snap")
	os.WriteFile(bad, data[:len(data)/2], 0o600)
	r = runCLI(t, append([]string{"cluster", "snapshot", "restore", bad}, via...)...)
	if r.code != exitFailure || !strings.HasPrefix(r.stderr, "error: invalid_argument: ") {
		t.Fatalf("restore of half a snapshot: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	empty := filepath.Join(t.TempDir(), "empty.snap")
	os.WriteFile(empty, nil, 0o600)
	wantCLIError(t, runCLI(t, append([]string{"cluster", "snapshot", "restore", empty}, via...)...),
		exitFailure, "error: the snapshot is empty\n", false)
	if got := spent(); got != "10.00" {
		t.Fatalf("spent %s after refused restores, want 10.00", got)
	}
}

func testTransferLeader(t *testing.T, cl *testCluster, voters []string, leader, target string) string {
	wantCLI(t, runCLI(t, "cluster", "transfer-leader", target, "--addr", cl.addr(leader)), 0, "leader  "+target+"\n")
	if got := cl.waitStable(voters...); got != target {
		t.Fatalf("leader %s after transfer-leader %s", got, target)
	}
	// Naming the leader (asked through the old leader) changes nothing.
	wantCLI(t, runCLI(t, "cluster", "transfer-leader", target, "--addr", cl.addr(leader)), 0, "leader  "+target+"\n")
	if r := runCLI(t, "cluster", "transfer-leader", "n9", "--addr", cl.addr(target)); r.code != exitFailure ||
		!strings.HasPrefix(r.stderr, "error: not_found: ") {
		t.Fatalf("transfer-leader to a stranger: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return target
}

func testRemoveServer(t *testing.T, cl *testCluster, voters []string, leader, victim string) {
	// Through the victim itself: the SDK follows the leader hint.
	r := runCLI(t, "cluster", "remove", victim, "--addr", cl.addr(victim))
	if r.code != 0 || !regexp.MustCompile(`^removed +`+victim+`\nlog index +\d+\n$`).MatchString(r.stdout) {
		t.Fatalf("remove %s: exit %d\n%s%s", victim, r.code, r.stdout, r.stderr)
	}
	rest := followers(voters, victim)
	if got := cl.waitStable(rest...); got != leader {
		t.Fatalf("leader %s after removing %s, want %s", got, victim, leader)
	}
	r = runCLI(t, "cluster", "status", "--addr", cl.addr(leader), "--output", "json")
	var st tollgatev1.StatusResponse
	decodeCLIJSON(t, r, &st)
	if len(st.Members) != 2 {
		t.Fatalf("status after remove: %v", &st)
	}
	for _, m := range st.Members {
		if m.Id == victim || m.Suffrage != "Voter" {
			t.Errorf("member %v after removing %s", m, victim)
		}
	}
}

// TestClusterCLIBadInput: usage errors exit 2 before anything is sent, and
// local file errors exit 1 before any call.
func TestClusterCLIBadInput(t *testing.T) {
	noNode := freePort(t) // nothing listens there
	usage := func(path string) string { return "\nRun '" + path + " --help' for usage.\n" }
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"cluster", "remove"}, `error: "tollgate cluster remove" takes ID; got 0 argument(s)` + usage("tollgate cluster remove")},
		{[]string{"cluster", "transfer-leader", "n1", "n2"}, `error: "tollgate cluster transfer-leader" takes at most one ID; got 2 argument(s)` + usage("tollgate cluster transfer-leader")},
		{[]string{"cluster", "join"}, `error: "tollgate cluster join" takes one or more gossip addresses (HOST:PORT)` + usage("tollgate cluster join")},
		{[]string{"cluster", "join", "10.0.0.1"}, `error: gossip address "10.0.0.1": want HOST:PORT` + usage("tollgate cluster join")},
		{[]string{"cluster", "status", "--tenant", "acme"}, `error: unknown flag: --tenant` + usage("tollgate cluster status")},
		{[]string{"cluster", "stat"}, `error: unknown command "stat" for "tollgate cluster"; did you mean status?` + usage("tollgate cluster")},
		{[]string{"cluster", "snapshot", "save"}, `error: "tollgate cluster snapshot save" takes FILE; got 0 argument(s)` + usage("tollgate cluster snapshot save")},
		{[]string{"cluster", "snapshot", "restore", "a", "b"}, `error: "tollgate cluster snapshot restore" takes FILE; got 2 argument(s)` + usage("tollgate cluster snapshot restore")},
		{[]string{"cluster", "status", "--timeout", "0s"}, `error: --timeout 0s: must be positive` + usage("tollgate cluster status")},
	} {
		wantCLIError(t, runCLI(t, tc.args...), exitUsage, tc.stderr, false)
	}

	missing := filepath.Join(t.TempDir(), "missing.snap")
	wantCLIError(t, runCLI(t, "cluster", "snapshot", "restore", missing, "--addr", noNode), exitFailure,
		"error: open "+missing+": no such file or directory\n", false)
	noDir := filepath.Join(t.TempDir(), "no-such-dir", "backup.snap")
	wantCLIError(t, runCLI(t, "cluster", "snapshot", "save", noDir, "--addr", noNode), exitFailure,
		"error: open "+noDir+".tmp: no such file or directory\n", false)
	// No node answers: the call fails and no partial file is left.
	file := filepath.Join(t.TempDir(), "backup.snap")
	r := runCLI(t, "cluster", "snapshot", "save", file, "--addr", noNode, "--timeout", "500ms")
	if r.code != exitFailure || !(strings.HasPrefix(r.stderr, "error: unavailable: ") || strings.HasPrefix(r.stderr, "error: deadline_exceeded: ")) {
		t.Fatalf("save from no node: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 0 {
		t.Errorf("a failed save left %v", entries)
	}
}

// TestClusterStatusTable pins the table layout, gossip-only members and
// unreachable members included.
func TestClusterStatusTable(t *testing.T) {
	st := &tollgatev1.StatusResponse{
		NodeId: "n1", State: "Leader", LeaderId: "n1", LeaderApiAddr: "10.0.0.1:7070", Term: 3, CommitIndex: 42, AppliedIndex: 42,
		Members: []*tollgatev1.Member{
			{Id: "n1", Suffrage: "Voter", Leader: true, Gossip: "alive", Reachable: true, State: "Leader",
				RaftAddr: "10.0.0.1:7071", ApiAddr: "10.0.0.1:7070", AppliedIndex: 42, Version: "v1"},
			{Id: "n2", Suffrage: "Voter", Gossip: "alive", Reachable: true, State: "Follower",
				RaftAddr: "10.0.0.2:7071", ApiAddr: "10.0.0.2:7070", AppliedIndex: 40, Lag: 2, Version: "v1"},
			{Id: "n3", Suffrage: "Nonvoter", Gossip: "suspect", RaftAddr: "10.0.0.3:7071"},
		},
		GossipOnly: []*tollgatev1.Member{{Id: "n4", Gossip: "alive", RaftAddr: "10.0.0.4:7071", ApiAddr: "10.0.0.4:7070", Version: "v2"}},
	}
	var out bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetOut(&out)
	if err := printReply(cmd, &clientFlags{output: outputTable}, st, func(w io.Writer) { writeClusterStatus(w, st) }); err != nil {
		t.Fatal(err)
	}
	want := `node             n1
state            Leader
leader           n1
leader api addr  10.0.0.1:7070
term             3
commit index     42
applied index    42

ID  SUFFRAGE  LEADER  GOSSIP   STATE     RAFT ADDR      API ADDR       APPLIED  LAG  REACHABLE  VERSION
n1  Voter     *       alive    Leader    10.0.0.1:7071  10.0.0.1:7070  42       0    yes        v1
n2  Voter             alive    Follower  10.0.0.2:7071  10.0.0.2:7070  40       2    yes        v1
n3  Nonvoter          suspect  -         10.0.0.3:7071  -              -        -    no         -

In the gossip pool, not in the Raft configuration:
ID  GOSSIP  RAFT ADDR      API ADDR       VERSION
n4  alive   10.0.0.4:7071  10.0.0.4:7070  v2
`
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestTransferProgress: progress is reported at most once per interval,
// with the bytes so far.
func TestTransferProgress(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &transferProgress{w: &out, verb: "sent", now: func() time.Time { return now }, next: now.Add(progressInterval)}
	p.add(1 << 20) // before the first interval: quiet
	now = now.Add(progressInterval)
	p.add(1 << 19)
	now = now.Add(progressInterval / 2)
	p.add(1 << 20) // within the interval after a report: quiet
	now = now.Add(progressInterval / 2)
	p.add(1 << 19)
	want := "snapshot: 1572864 bytes (1.5 MiB) sent so far\nsnapshot: 3145728 bytes (3 MiB) sent so far\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestReachableLeaderAddr: a wildcard leader address is replaced by --addr
// when the leader answered itself, and refused otherwise.
func TestReachableLeaderAddr(t *testing.T) {
	for _, tc := range []struct {
		leaderAddr, leader, answering, want, err string
	}{
		{"10.0.0.2:7070", "n2", "n1", "10.0.0.2:7070", ""},
		{"db-2.internal:7070", "n2", "n1", "db-2.internal:7070", ""},
		{"[::]:7070", "n1", "n1", "localhost:7070", ""},
		{":7070", "n1", "n1", "localhost:7070", ""},
		{"0.0.0.0:7070", "n2", "n1", "", `failed_precondition: the leader n2 advertises the API address "0.0.0.0:7070", which cannot be dialed from here`},
	} {
		got, err := reachableLeaderAddr(&tollgatev1.StatusResponse{LeaderApiAddr: tc.leaderAddr, LeaderId: tc.leader, NodeId: tc.answering}, "localhost:7070")
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.HasPrefix(err.Error(), tc.err)) {
			t.Errorf("leader %s at %q asked %s: got %q, %v; want %q, %s", tc.leader, tc.leaderAddr, tc.answering, got, err, tc.want, tc.err)
		}
	}
}

// runCLIWithStdin is runCLI with stdin (runCLI leaves it unset).
func runCLIWithStdin(t *testing.T, stdin io.Reader, args ...string) cliResult {
	t.Helper()
	root := newRootCommand()
	var stdout, stderr bytes.Buffer
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	code, msg := exitStatus(root.Execute())
	if msg != "" {
		stderr.WriteString(msg + "\n")
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}
