package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

func init() { clientCommands = append(clientCommands, newStatusCommand) }

func newStatusCommand() *cobra.Command {
	var stateHash bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the Raft state of a node and the cluster's members",
		Long: `Show the answering node's Raft state (role, term, commit and applied
indexes), the leader and the members. --state-hash adds a SHA-256 of the
state machine at the applied index: nodes at the same applied index must
report the same hash (it costs a full serialization of the state).`,
		Example: `  tollgate status
  tollgate status --addr 10.0.0.2:7070 --state-hash --output json`,
		Args: argsExactly(),
	}
	cf := addClientFlags(cmd, false)
	cmd.Flags().BoolVar(&stateHash, "state-hash", false, "also compute a hash of the state machine")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := unary(cmd, cf, clusterService, tollgatev1connect.ClusterServiceClient.Status,
			&tollgatev1.StatusRequest{IncludeStateHash: stateHash})
		if err != nil {
			return err
		}
		return printReply(cmd, cf, resp, func(w io.Writer) { writeStatus(w, resp) })
	}
	return withUsageErrors(cmd)
}

// writeStatus writes the node's fields, then its members as a table.
func writeStatus(w io.Writer, st *tollgatev1.StatusResponse) {
	lastApplied := ""
	if st.LastAppliedLogTimeMs != 0 {
		lastApplied = time.UnixMilli(st.LastAppliedLogTimeMs).UTC().Format(time.RFC3339Nano)
	}
	writeFields(w, []field{
		{"node", st.NodeId},
		{"state", st.State},
		{"version", st.Version},
		{"api addr", st.ApiAddr},
		{"leader", orDash(st.LeaderId)},
		{"leader raft addr", st.LeaderRaftAddr},
		{"term", formatUint(st.Term)},
		{"commit index", formatUint(st.CommitIndex)},
		{"applied index", formatUint(st.AppliedIndex)},
		{"last log index", formatUint(st.LastLogIndex)},
		{"last applied at", lastApplied},
		{"state hash", st.StateHash},
	})
	rows := make([][]string, len(st.Members))
	for i, m := range st.Members {
		rows[i] = []string{m.Id, m.RaftAddr, m.Suffrage, strconv.FormatBool(m.Leader)}
	}
	// A line without cells ends the fields' columns: the members get their own widths.
	fmt.Fprintln(w)
	writeTable(w, []string{"MEMBER", "RAFT ADDR", "SUFFRAGE", "LEADER"}, rows)
}
