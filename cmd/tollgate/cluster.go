package main

// `tollgate cluster`: status with every member's progress, join, remove,
// leadership transfer, and snapshot save/restore. Unary calls go through
// call/unary like every client command (the SDK retries and follows leader
// hints). The snapshot streams do not follow hints, so they ask --addr who
// the leader is first and open the stream there (onLeader).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

const (
	// snapshotChunkBytes is the size of one uploaded chunk (the API's limit
	// per message is 1 MiB).
	snapshotChunkBytes = 1 << 20
	// progressInterval is how often a long snapshot transfer reports its
	// bytes so far.
	progressInterval = time.Second
	// leaderAttemptsMax bounds how often onLeader asks for a leader while an
	// election is in progress; leaderBackoffMin/Max bound the waits between.
	leaderAttemptsMax = 10
	leaderBackoffMin  = 50 * time.Millisecond
	leaderBackoffMax  = time.Second
)

func init() { clientCommands = append(clientCommands, newClusterCommand) }

func newClusterCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("cluster",
		"Show and administer the Raft cluster: members, leadership, snapshots",
		`Show the cluster's members and how far behind each one is, add a node to
the gossip pool, remove a server, move leadership, and save or restore a
snapshot of the whole state.

Changes (remove, transfer-leader, snapshot restore) are made by the leader;
--addr may name any node.`,
		`  tollgate cluster status --addr 127.0.0.1:7070
  tollgate cluster transfer-leader n2
  tollgate cluster snapshot save backup.snap
  tollgate cluster snapshot restore backup.snap`))
	cf := addClientFlags(cmd, false)
	cmd.AddCommand(
		newClusterStatusCommand(cf),
		newClusterJoinCommand(cf),
		newClusterRemoveCommand(cf),
		newClusterTransferLeaderCommand(cf),
		newClusterSnapshotCommand(cf),
	)
	return cmd
}

func newClusterStatusCommand(cf *clientFlags) *cobra.Command {
	var stateHash bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the leader and every member's state, applied index and lag",
		Long: `Show the answering node's view of the cluster: the leader, the term and
indexes, then one row per server of the Raft configuration. The answering
node asks every member for its own state and applied index: LAG is how many
entries a member has still to apply, and REACHABLE says whether it answered
(APPLIED and LAG are "-" when it did not). Nodes in the gossip pool but not
(yet) in the Raft configuration are listed after the members.

--state-hash adds a SHA-256 of the answering node's state machine at its
applied index: nodes at the same applied index must report the same hash.`,
		Example: `  tollgate cluster status
  tollgate cluster status --addr 127.0.0.1:7170 --state-hash --output json`,
		Args: argsExactly(),
	}
	cmd.Flags().BoolVar(&stateHash, "state-hash", false, "also compute a hash of the state machine (a full serialization of the state)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := unary(cmd, cf, clusterService, tollgatev1connect.ClusterServiceClient.Status,
			&tollgatev1.StatusRequest{IncludeProgress: true, IncludeStateHash: stateHash})
		if err != nil {
			return err
		}
		return printReply(cmd, cf, resp, func(w io.Writer) { writeClusterStatus(w, resp) })
	}
	return cmd
}

// writeClusterStatus writes the answering node's fields, the members, and
// the gossip-only members if there are any.
func writeClusterStatus(w io.Writer, st *tollgatev1.StatusResponse) {
	writeFields(w, []field{
		{"node", st.NodeId},
		{"state", st.State},
		{"leader", orDash(st.LeaderId)},
		{"leader api addr", st.LeaderApiAddr},
		{"term", formatUint(st.Term)},
		{"commit index", formatUint(st.CommitIndex)},
		{"applied index", formatUint(st.AppliedIndex)},
		{"state hash", st.StateHash},
	})
	rows := make([][]string, len(st.Members))
	for i, m := range st.Members {
		leader, applied, lag, reachable, state := "", "-", "-", "no", "-"
		if m.Leader {
			leader = "*"
		}
		if m.Reachable {
			applied, lag, reachable, state = formatUint(m.AppliedIndex), formatUint(m.Lag), "yes", orDash(m.State)
		}
		rows[i] = []string{m.Id, m.Suffrage, leader, orDash(m.Gossip), state, orDash(m.RaftAddr), orDash(m.ApiAddr),
			applied, lag, reachable, orDash(m.Version)}
	}
	// A line without cells ends the fields' columns: each table gets its own widths.
	fmt.Fprintln(w)
	writeTable(w, []string{"ID", "SUFFRAGE", "LEADER", "GOSSIP", "STATE", "RAFT ADDR", "API ADDR", "APPLIED", "LAG", "REACHABLE", "VERSION"}, rows)
	if len(st.GossipOnly) == 0 {
		return
	}
	rows = make([][]string, len(st.GossipOnly))
	for i, m := range st.GossipOnly {
		rows[i] = []string{m.Id, orDash(m.Gossip), orDash(m.RaftAddr), orDash(m.ApiAddr), orDash(m.Version)}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "In the gossip pool, not in the Raft configuration:")
	writeTable(w, []string{"ID", "GOSSIP", "RAFT ADDR", "API ADDR", "VERSION"}, rows)
}

func newClusterJoinCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "join ADDR [ADDR...]",
		Short: "Make the node at --addr join the gossip pool of other nodes",
		Long: `Make the node at --addr join the gossip pool of the nodes at the gossip
addresses ADDR (HOST:PORT, their --gossip-addr). The leader then adds it to
Raft as a non-voter and promotes it to voter once it has caught up; watch it
with 'tollgate cluster status'. A node started with --join does this by
itself.`,
		Example: `  tollgate cluster join 127.0.0.1:7072 --addr 127.0.0.1:7370`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd, "%q takes one or more gossip addresses (HOST:PORT)", cmd.CommandPath())
			}
			for _, a := range args {
				if _, _, err := net.SplitHostPort(a); err != nil {
					return usageErrorf(cmd, "gossip address %q: want HOST:PORT", a)
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, clusterService, tollgatev1connect.ClusterServiceClient.Join,
				&tollgatev1.JoinRequest{Addrs: args})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, field{"contacted", fmt.Sprintf("%d of %d", resp.Joined, len(args))})
		},
	}
	return cmd
}

func newClusterRemoveCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a server from the Raft configuration",
		Long: `Remove the server ID from the Raft configuration (done by the leader). A
removed server is not added back from gossip for a minute; to bring it back
later, start it with a fresh data directory.

Removing a voter shrinks the quorum: remove a server only when the others
are enough to carry on (2 of 3, 3 of 5).`,
		Example: `  tollgate cluster remove n3`,
		Args:    argsExactly("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := unary(cmd, cf, clusterService, tollgatev1connect.ClusterServiceClient.RemoveServer,
				&tollgatev1.RemoveServerRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, field{"removed", args[0]}, field{"log index", formatLogIndex(resp.LogIndex)})
		},
	}
	return cmd
}

func newClusterTransferLeaderCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "transfer-leader [ID]",
		Short: "Hand leadership to another voter",
		Long: `Hand leadership to the voter ID, or (without ID) to the most up-to-date
follower, and print the new leader. Naming the current leader changes
nothing.`,
		Example: `  tollgate cluster transfer-leader n2
  tollgate cluster transfer-leader --addr 127.0.0.1:7070`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf(cmd, "%q takes at most one ID; got %d argument(s)", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &tollgatev1.TransferLeadershipRequest{}
			if len(args) == 1 {
				req.Id = args[0]
			}
			resp, err := call(cmd, cf, func(ctx context.Context, c *client.Client) (*tollgatev1.TransferLeadershipResponse, error) {
				return transferLeadership(ctx, c, req)
			})
			if err != nil {
				return err
			}
			return printFields(cmd, cf, resp, field{"leader", resp.NewLeaderId})
		},
	}
	return cmd
}

// transferLeadership asks for the transfer unless req names the leader
// already: Raft cannot transfer leadership to itself, and the node reports
// that as an unknown outcome, which the SDK would retry.
func transferLeadership(ctx context.Context, c *client.Client, req *tollgatev1.TransferLeadershipRequest) (*tollgatev1.TransferLeadershipResponse, error) {
	if req.Id != "" {
		st, err := c.Cluster.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{}))
		if err != nil {
			return nil, err
		}
		if st.Msg.LeaderId == req.Id {
			return &tollgatev1.TransferLeadershipResponse{NewLeaderId: req.Id}, nil
		}
	}
	resp, err := c.Cluster.TransferLeadership(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func newClusterSnapshotCommand(cf *clientFlags) *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("snapshot",
		"Save the cluster's state to a file, or restore it from one",
		`Save the leader's state machine (budgets, limits, idempotency records) to
a file, or replace the state of the whole cluster with a saved one. The
Raft configuration (the members) is neither saved nor restored.

Both stream to or from the leader, found by asking --addr. Large snapshots
report their progress on stderr every second; --timeout bounds the whole
transfer, so raise it for large states.`,
		`  tollgate cluster snapshot save backup.snap
  tollgate cluster snapshot save - > backup.snap
  tollgate cluster snapshot restore backup.snap`))
	cmd.AddCommand(newSnapshotSaveCommand(cf), newSnapshotRestoreCommand(cf))
	return cmd
}

func newSnapshotSaveCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the leader's state to FILE (- for stdout)",
		Long: `Save a snapshot of the leader's state, as of a linearizable read (every
write acknowledged before the command started is in it), to FILE. The file
is written as FILE.tmp, synced to disk, then renamed to FILE, so FILE is
either the old file or the whole new snapshot. With FILE "-" the snapshot
goes to stdout and the summary to stderr.

Prints the bytes written and the log index the snapshot reflects.`,
		Example: `  tollgate cluster snapshot save backup.snap
  tollgate cluster snapshot save - --addr 127.0.0.1:7170 | gzip > backup.snap.gz`,
		Args: argsExactly("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error { return saveSnapshot(cmd, cf, args[0]) },
	}
}

func newSnapshotRestoreCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's state with the snapshot in FILE (- for stdin)",
		Long: `Replace the state of the whole cluster with the snapshot in FILE (made by
'tollgate cluster snapshot save'). Everything written since that snapshot
is lost. The leader checks the whole snapshot before it changes anything; a
damaged file is refused. The members are kept.

Prints the new applied index and the state hash; 'tollgate cluster status
--state-hash' on any node at that index reports the same hash.`,
		Example: `  tollgate cluster snapshot restore backup.snap
  gunzip -c backup.snap.gz | tollgate cluster snapshot restore -`,
		Args: argsExactly("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error { return restoreSnapshot(cmd, cf, args[0]) },
	}
}

// snapshotSaved is the summary of a saved snapshot (--output json).
type snapshotSaved struct {
	File string `json:"file"`
	// The API's JSON writes 64-bit integers as strings; so does this.
	Bytes        int64  `json:"bytes,string"`
	AppliedIndex uint64 `json:"appliedIndex,string"`
}

func saveSnapshot(cmd *cobra.Command, cf *clientFlags, path string) error {
	summary := cmd.OutOrStdout()
	out := summary
	var tmp *os.File
	if path == "-" {
		summary = cmd.ErrOrStderr()
	} else {
		var err error
		tmp, err = os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return localError("%v", err)
		}
		defer func() {
			if tmp != nil { // not renamed: leave no partial file behind
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		out = tmp
	}
	saved := snapshotSaved{File: path}
	err := onLeader(cmd, cf, func(ctx context.Context, leader *client.Client) error {
		return receiveSnapshot(ctx, leader, out, newTransferProgress(cmd.ErrOrStderr(), "received"), &saved)
	})
	if err != nil {
		return err
	}
	if tmp != nil {
		if err := commitFile(tmp, path); err != nil {
			return localError("%v", err)
		}
		tmp = nil
	}
	if cf.output == outputJSON {
		b, err := json.MarshalIndent(saved, "", "  ")
		if err != nil {
			return localError("encode summary: %v", err)
		}
		_, err = fmt.Fprintf(summary, "%s\n", b)
		return err
	}
	if path == "-" {
		path = "(stdout)"
	}
	fmt.Fprintf(summary, "saved %d bytes at applied index %d to %s\n", saved.Bytes, saved.AppliedIndex, path)
	return nil
}

// receiveSnapshot streams the leader's snapshot into out.
func receiveSnapshot(ctx context.Context, leader *client.Client, out io.Writer, progress *transferProgress, saved *snapshotSaved) error {
	stream, err := leader.Cluster.SnapshotSave(ctx, connect.NewRequest(&tollgatev1.SnapshotSaveRequest{}))
	if err != nil {
		return apiError(err)
	}
	defer stream.Close()
	messages := 0
	for stream.Receive() {
		msg := stream.Msg()
		if messages == 0 {
			saved.AppliedIndex = msg.AppliedIndex
		}
		messages++
		if _, err := out.Write(msg.Chunk); err != nil {
			return localError("write snapshot: %v", err)
		}
		saved.Bytes += int64(len(msg.Chunk))
		progress.add(len(msg.Chunk))
	}
	if err := stream.Err(); err != nil {
		return apiError(err)
	}
	if messages == 0 {
		return localError("the leader sent no snapshot")
	}
	return nil
}

// commitFile makes tmp durable under path: fsync, rename, fsync the
// directory (so the rename survives a crash too).
func commitFile(tmp *os.File, path string) error {
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

func restoreSnapshot(cmd *cobra.Command, cf *clientFlags, path string) error {
	in := cmd.InOrStdin()
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return localError("%v", err)
		}
		defer f.Close()
		in = f
	}
	var resp *tollgatev1.SnapshotRestoreResponse
	var sent int64
	err := onLeader(cmd, cf, func(ctx context.Context, leader *client.Client) error {
		var err error
		resp, sent, err = sendSnapshot(ctx, leader, in, newTransferProgress(cmd.ErrOrStderr(), "sent"))
		return err
	})
	if err != nil {
		return err
	}
	return printFields(cmd, cf, resp,
		field{"bytes", formatInt(sent)},
		field{"applied index", formatUint(resp.AppliedIndex)},
		field{"state hash", resp.StateHash})
}

// sendSnapshot uploads in, in chunks, and returns the leader's answer. A
// failed read aborts the upload (the server sees a cancelled stream, not a
// short snapshot).
func sendSnapshot(ctx context.Context, leader *client.Client, in io.Reader, progress *transferProgress) (*tollgatev1.SnapshotRestoreResponse, int64, error) {
	ctx, abort := context.WithCancel(ctx)
	defer abort()
	stream := leader.Cluster.SnapshotRestore(ctx)
	buf := make([]byte, snapshotChunkBytes)
	var sent int64
	for {
		n, readErr := io.ReadFull(in, buf)
		if n > 0 {
			// io.EOF from Send means the server ended the call; its reason
			// comes from CloseAndReceive.
			if err := stream.Send(&tollgatev1.SnapshotRestoreRequest{Chunk: buf[:n]}); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, sent, apiError(err)
			}
			sent += int64(n)
			progress.add(n)
		}
		if readErr == io.EOF || readErr == io.ErrUnexpectedEOF {
			break
		}
		if readErr != nil {
			abort()
			stream.CloseAndReceive()
			return nil, sent, localError("read snapshot: %v", readErr)
		}
	}
	if sent == 0 {
		abort()
		stream.CloseAndReceive()
		return nil, 0, localError("the snapshot is empty")
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return nil, sent, apiError(err)
	}
	return resp.Msg, sent, nil
}

// onLeader runs fn with a client for the leader, all under --timeout. The
// leader's API address comes from Status on --addr, because streaming calls
// are not retried or redirected by the SDK. fn returns errors ready to print
// (apiError or localError): unlike call, which makes every error an API
// error, a transfer can also fail on this machine (a file).
func onLeader(cmd *cobra.Command, cf *clientFlags, fn func(ctx context.Context, leader *client.Client) error) error {
	if err := cf.check(cmd); err != nil {
		return err
	}
	opts, err := cf.clientOptions(cmd)
	if err != nil {
		return err
	}
	c, err := client.New([]string{cf.addr}, opts...)
	if err != nil {
		return usageErrorf(cmd, "--addr %q: want HOST:PORT", cf.addr)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
	defer cancel()
	addr, err := leaderAPIAddr(ctx, c, cf.addr)
	if err != nil {
		return apiError(err)
	}
	leader, err := client.New([]string{addr}, opts...)
	if err != nil {
		return localError("the leader's API address %q: %v", addr, err)
	}
	defer leader.Close()
	return fn(ctx, leader)
}

// leaderAPIAddr asks the node at asked for the leader's API address. During
// an election there is none yet: ask again, a bounded number of times.
func leaderAPIAddr(ctx context.Context, c *client.Client, asked string) (string, error) {
	backoff := leaderBackoffMin
	for attempt := 1; ; attempt++ {
		resp, err := c.Cluster.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{}))
		if err != nil {
			return "", err
		}
		st := resp.Msg
		if st.LeaderApiAddr != "" {
			return reachableLeaderAddr(st, asked)
		}
		if attempt == leaderAttemptsMax {
			if st.LeaderId != "" {
				return "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("node %s does not know the API address of the leader %s", st.NodeId, st.LeaderId))
			}
			return "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("node %s (%s) knows no leader", st.NodeId, st.State))
		}
		select {
		case <-ctx.Done():
			return "", connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("no leader known to node %s: %w", st.NodeId, ctx.Err()))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, leaderBackoffMax)
	}
}

// reachableLeaderAddr is the leader's API address as this machine can dial
// it. A node listening on all interfaces without --api-advertise hands out
// a wildcard address (":7070", "[::]:7070"): that is the address we asked
// when the leader answered itself, and unusable otherwise.
func reachableLeaderAddr(st *tollgatev1.StatusResponse, asked string) (string, error) {
	host, _, err := net.SplitHostPort(st.LeaderApiAddr)
	if ip := net.ParseIP(host); err == nil && host != "" && (ip == nil || !ip.IsUnspecified()) {
		return st.LeaderApiAddr, nil
	}
	if st.LeaderId == st.NodeId {
		return asked, nil
	}
	return "", connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
		"the leader %s advertises the API address %q, which cannot be dialed from here; run the command with --addr set to the leader's address, or start the nodes with --api-advertise",
		st.LeaderId, st.LeaderApiAddr))
}

// localError is a failure on this machine (a file), not of the call.
func localError(format string, args ...any) error {
	return &exitError{code: exitFailure, msg: "error: " + fmt.Sprintf(format, args...)}
}

// transferProgress reports on stderr, at most once per progressInterval,
// how many bytes a snapshot transfer has moved, so a long one shows it is
// alive.
type transferProgress struct {
	w     io.Writer
	verb  string
	now   func() time.Time
	bytes int64
	next  time.Time
}

func newTransferProgress(w io.Writer, verb string) *transferProgress {
	return &transferProgress{w: w, verb: verb, now: time.Now, next: time.Now().Add(progressInterval)}
}

func (p *transferProgress) add(n int) {
	p.bytes += int64(n)
	if now := p.now(); !now.Before(p.next) {
		fmt.Fprintf(p.w, "snapshot: %d bytes (%s) %s so far\n", p.bytes, formatMiB(p.bytes), p.verb)
		p.next = now.Add(progressInterval)
	}
}

func formatMiB(b int64) string {
	return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(b)/(1<<20)), ".0") + " MiB"
}
