package cluster_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	bolt "go.etcd.io/bbolt"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/receipt"
	"github.com/tollgate/tollgate/test/procs"
)

// runCLI runs the tollgate binary in its own process and returns its
// combined output and exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(procs.Binary(t), args...)
	cmd.Env = append(os.Environ(), "TOLLGATE_TENANT=")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("tollgate %q: %v", args, err)
	}
	return string(out), 0
}

// nodeChain is every checkpoint a node holds, in index order.
type nodeChain struct {
	heldFrom uint64
	missing  []*tollgatev1.IndexRange
	cps      []*tollgatev1.SignedCheckpoint
	byIndex  map[uint64]*tollgatev1.SignedCheckpoint
}

func listChain(t *testing.T, n *procs.Node) nodeChain {
	t.Helper()
	c := mustClient(t, []string{n.APIAddr})
	out := nodeChain{byIndex: map[uint64]*tollgatev1.SignedCheckpoint{}}
	for from := uint64(1); ; {
		resp, err := c.Receipts.ListCheckpoints(context.Background(), connect.NewRequest(&tollgatev1.ListCheckpointsRequest{FromIndex: from, PageSize: 1000}))
		if err != nil {
			t.Fatalf("%s: list checkpoints: %v", n.ID, err)
		}
		out.heldFrom = resp.Msg.HeldFromIndex
		out.missing = resp.Msg.Missing
		for _, cp := range resp.Msg.Checkpoints {
			out.cps = append(out.cps, cp)
			out.byIndex[cp.Decoded.LogIndex] = cp
		}
		if resp.Msg.NextFromIndex == 0 {
			return out
		}
		from = resp.Msg.NextFromIndex
	}
}

// verifyChain checks every signature and every link of a node's chain.
func verifyChain(t *testing.T, id string, ch nodeChain, keys receipt.KeySet) {
	t.Helper()
	var prev *receipt.Checkpoint
	for _, sc := range ch.cps {
		cp, err := receipt.VerifyCheckpoint(receipt.SignedCheckpoint{Body: sc.Body, Signature: sc.Signature}, keys)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if prev != nil {
			if err := receipt.VerifyLink(prev, cp); err != nil {
				t.Fatalf("%s: chain broken between %d and %d: %v", id, prev.Index, cp.Index, err)
			}
		} else if ch.heldFrom <= 1 && cp.Prev != (receipt.Hash{}) {
			t.Fatalf("%s holds receipts from index 1, but its first checkpoint %d links to %s", id, cp.Index, cp.Prev)
		}
		prev = cp
	}
}

// [receipts] acceptance 1 and 2: every replica produces byte-identical
// checkpoints; the chain stays gapless through a leader change, a follower
// catching up by snapshot install, and a full restart; every acknowledged
// decision has exactly one receipt, identical on every node and valid with
// the public key alone (checked by the CLI in another process); an edited
// receipt fails, and a checkpoint missing from a node's store is reported
// as a gap by `tollgate receipt audit`.
func TestReceiptsAcrossFailures(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "cluster.key")
	if out, code := runCLI(t, "keygen", "--out", keyFile); code != 0 {
		t.Fatalf("keygen: %d %s", code, out)
	}
	pubPEM, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := receipt.ParsePublicKeys(pubPEM)
	if err != nil || len(keys) != 1 {
		t.Fatalf("public key file: %v (%d keys)", err, len(keys))
	}

	c := procs.NewCluster(t, 3, procs.Options{Extra: []string{"--signing-key", keyFile,
		"--snapshot-threshold", "32", "--snapshot-interval", "20ms", "--trailing-logs", "16"}})
	c.StartAll()
	leader := c.WaitLeader(30 * time.Second)
	cl := mustClient(t, c.APIAddrs())
	ctx := context.Background()
	createBudget(t, cl, tenant, "b", "1000000")

	acked := map[string]*tollgatev1.ConsumeResponse{}
	consume := func(via *client.Client, n int, include bool) {
		t.Helper()
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("r-%d", len(acked))
			// Around a crash the SDK's own retries may run out; the same
			// request id makes trying again safe.
			var resp *connect.Response[tollgatev1.ConsumeResponse]
			var err error
			procs.Poll(15*time.Second, 50*time.Millisecond, func() bool {
				resp, err = via.Budgets.Consume(ctx, connect.NewRequest(&tollgatev1.ConsumeRequest{
					Tenant: tenant, BudgetId: "b", Amount: "1.5", RequestId: id, IncludeReceipt: include}))
				return err == nil
			})
			if err != nil {
				t.Fatalf("consume %s: %v", id, err)
			}
			acked[id] = resp.Msg
		}
	}
	// Through a follower, with the whole receipt in the reply.
	follower := mustClient(t, c.APIAddrs(others(c, leader)[0]))
	consume(follower, 20, true)
	for id, r := range acked {
		leaf, _, err := client.VerifyReceipt(r.Receipt, keys)
		if err != nil {
			t.Fatalf("receipt in the reply to %s: %v", id, err)
		}
		if leaf.RequestID != id || leaf.Operation != "budget.consume" || leaf.Outcome != "allowed" ||
			leaf.Index != r.ReceiptRef.LogIndex || leaf.Position != r.ReceiptRef.Position {
			t.Fatalf("receipt of %s: leaf %+v, ref %v", id, leaf, r.ReceiptRef)
		}
	}

	// A leader change.
	c.Kill(leader)
	c.WaitLeader(30 * time.Second)
	consume(cl, 30, false)
	c.Start(leader)

	// A follower down while the log is compacted: it installs a snapshot.
	leader = c.WaitLeader(30 * time.Second)
	lagger := others(c, leader)[0]
	var st *tollgatev1.StatusResponse
	procs.Poll(15*time.Second, 50*time.Millisecond, func() bool {
		st, err = c.Status(lagger, false, false)
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(lagger)
	consume(mustClient(t, c.APIAddrs(others(c, lagger)...)), 150, false)
	if !procs.Poll(20*time.Second, 50*time.Millisecond, func() bool {
		ls, err := c.Status(c.Leader(), false, false)
		return err == nil && ls.LastSnapshotIndex > st.LastLogIndex+17
	}) {
		t.Fatal("the leader did not compact its log past the lagging follower")
	}
	c.Start(lagger)
	c.WaitConverged(30*time.Second, c.Nodes...)
	if got := metric(t, lagger, "tollgate_snapshot_restores_total"); got < 1 {
		t.Fatalf("the lagging follower restored %v snapshots", got)
	}
	// It never applied the entries the snapshot covered: it fetches their
	// receipts from its peers.
	if !procs.Poll(20*time.Second, 100*time.Millisecond, func() bool {
		return strings.Contains(lagger.Log(), "receipts repaired from a peer")
	}) {
		t.Fatalf("%s did not repair the receipts its snapshot install skipped", lagger.ID)
	}

	// A full restart.
	for _, n := range c.Nodes {
		c.Kill(n)
		n.Args = withoutFlag(n.Args, "--join")
	}
	c.StartAll()
	c.WaitLeader(30 * time.Second)
	cl = mustClient(t, c.APIAddrs())
	consume(cl, 20, false)
	_, applied := c.WaitConverged(30*time.Second, c.Nodes...)
	if !procs.Poll(20*time.Second, 100*time.Millisecond, func() bool {
		for _, n := range c.Nodes {
			if len(listChain(t, n).missing) > 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("a node still misses receipts 20 s after converging")
	}

	// Every node holds the whole chain from index 1: signatures and links
	// hold, the bytes are the same everywhere, the chain heads agree with
	// the state.
	chains := map[string]nodeChain{}
	var full *nodeChain
	for _, n := range c.Nodes {
		ch := listChain(t, n)
		verifyChain(t, n.ID, ch, keys)
		chains[n.ID] = ch
		if ch.heldFrom != 1 {
			t.Errorf("%s holds receipts from %d, not from the start", n.ID, ch.heldFrom)
		}
		if full == nil {
			full = &ch
		} else if len(ch.cps) != len(full.cps) {
			t.Errorf("%s holds %d checkpoints, another node %d", n.ID, len(ch.cps), len(full.cps))
		}
		keysResp, err := mustClient(t, []string{n.APIAddr}).Receipts.GetPublicKeys(ctx, connect.NewRequest(&tollgatev1.GetPublicKeysRequest{
			Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
		if err != nil {
			t.Fatal(err)
		}
		last := ch.cps[len(ch.cps)-1].Decoded
		if keysResp.Msg.HeadIndex != last.LogIndex || keysResp.Msg.HeadHash != last.Hash || keysResp.Msg.ReadInfo.AppliedIndex != applied {
			t.Errorf("%s: state's chain head %d/%s, store's last checkpoint %d/%s", n.ID, keysResp.Msg.HeadIndex, keysResp.Msg.HeadHash, last.LogIndex, last.Hash)
		}
		if len(keysResp.Msg.Keys) != 1 || keysResp.Msg.Keys[0].KeyId != receipt.KeyID(keys[keysResp.Msg.Keys[0].KeyId]) {
			t.Errorf("%s signs with %v, not the --signing-key", n.ID, keysResp.Msg.Keys)
		}
	}
	for _, n := range c.Nodes {
		ch := chains[n.ID]
		t.Logf("%s: %d checkpoints from index %d to %d, held from %d", n.ID, len(ch.cps),
			ch.cps[0].Decoded.LogIndex, ch.cps[len(ch.cps)-1].Decoded.LogIndex, ch.heldFrom)
	}
	for id, ch := range chains {
		for index, cp := range ch.byIndex {
			other := full.byIndex[index]
			if other == nil || !bytes.Equal(other.Body, cp.Body) || !bytes.Equal(other.Signature, cp.Signature) {
				t.Fatalf("%s: checkpoint %d differs from the full chain's", id, index)
			}
		}
		if first := ch.cps[0].Decoded; first.PrevHash != strings.Repeat("0", 64) {
			t.Fatalf("%s: first checkpoint %d links to %s, not the start", id, first.LogIndex, first.PrevHash)
		}
	}

	// Exactly one receipt per acknowledged decision, the same on every node
	// that holds its index.
	seen := map[string]string{}
	for id, r := range acked {
		var want []byte
		for _, n := range c.Nodes {
			got, err := mustClient(t, []string{n.APIAddr}).Receipts.GetReceipt(ctx, connect.NewRequest(&tollgatev1.GetReceiptRequest{
				Tenant: tenant, RequestId: id, Consistency: tollgatev1.Consistency_CONSISTENCY_STALE}))
			if err != nil {
				t.Fatalf("%s: receipt of %s: %v", n.ID, id, err)
			}
			if got.Msg.Ref.LogIndex != r.ReceiptRef.LogIndex || got.Msg.Ref.Position != r.ReceiptRef.Position {
				t.Fatalf("%s: receipt of %s is at %v, the reply said %v", n.ID, id, got.Msg.Ref, r.ReceiptRef)
			}
			leaf, _, err := client.VerifyReceipt(got.Msg.Receipt, keys)
			if err != nil || leaf.RequestID != id || leaf.Outcome != "allowed" {
				t.Fatalf("%s: receipt of %s: %v %+v", n.ID, id, err, leaf)
			}
			if want == nil {
				want = got.Msg.Receipt.Leaf
			} else if !bytes.Equal(want, got.Msg.Receipt.Leaf) {
				t.Fatalf("receipt of %s differs between nodes", id)
			}
		}
		ref := fmt.Sprintf("%d/%d", r.ReceiptRef.LogIndex, r.ReceiptRef.Position)
		if other, dup := seen[ref]; dup {
			t.Fatalf("%s and %s share the receipt %s", id, other, ref)
		}
		seen[ref] = id
	}

	// The CLI in another process, with the public key file alone.
	var node *procs.Node
	for _, n := range c.Nodes {
		if chains[n.ID].heldFrom <= 1 {
			node = n
		}
	}
	addr := "--addr=" + node.APIAddr
	rfile := filepath.Join(dir, "r-3.json")
	if out, code := runCLI(t, "receipt", "get", addr, "--tenant", tenant, "--request-id", "r-3", "--out", rfile); code != 0 {
		t.Fatalf("receipt get: %d %s", code, out)
	}
	out, code := runCLI(t, "receipt", "verify", "--public-key", keyFile+".pub", rfile)
	if code != 0 || !strings.HasPrefix(out, "VALID: budget.consume acme/b allowed") {
		t.Fatalf("receipt verify: exit %d: %s", code, out)
	}
	raw, err := os.ReadFile(rfile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	leaf, _ := base64.StdEncoding.DecodeString(doc["leaf"].(string))
	leaf[len(leaf)-1] ^= 0x01
	doc["leaf"] = base64.StdEncoding.EncodeToString(leaf)
	tampered, _ := json.Marshal(doc)
	bad := filepath.Join(dir, "tampered.json")
	if err := os.WriteFile(bad, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "receipt", "verify", "--public-key", keyFile+".pub", bad); code != 1 || !strings.HasPrefix(out, "INVALID: ") {
		t.Fatalf("a tampered receipt: exit %d: %s", code, out)
	}
	if out, code := runCLI(t, "receipt", "audit", addr, "--public-key", keyFile+".pub", "--from", fmt.Sprint(chains[node.ID].heldFrom)); code != 0 || !strings.Contains(out, "AUDIT OK") {
		t.Fatalf("audit of %s: exit %d: %s", node.ID, code, out)
	}

	// A checkpoint removed from a stopped node's store (one its latest
	// snapshot covers, so the restart does not rewrite it) is a gap.
	ns, err := c.Status(node, false, false)
	if err != nil {
		t.Fatal(err)
	}
	// Not the snapshot's chain head either: a restart that does not find
	// the head in the store treats everything up to the snapshot as
	// missing and fetches it from the peers (which would heal the gap).
	var candidates []uint64
	cps := chains[node.ID].cps
	for i := 1; i+1 < len(cps); i++ {
		if cps[i+1].Decoded.LogIndex <= ns.LastSnapshotIndex {
			candidates = append(candidates, cps[i].Decoded.LogIndex)
		}
	}
	var victim uint64
	if len(candidates) > 0 {
		victim = candidates[len(candidates)/2]
	}
	if victim == 0 {
		t.Fatalf("%s has no checkpoint below its snapshot at %d", node.ID, ns.LastSnapshotIndex)
	}
	if err := c.Stop(node); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(node.DataDir, "receipts.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("checkpoints")).Delete(binary.BigEndian.AppendUint64(nil, victim))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	c.Start(node)
	c.WaitConverged(30*time.Second, c.Nodes...)
	out, code = runCLI(t, "receipt", "audit", addr, "--public-key", keyFile+".pub", "--from", fmt.Sprint(chains[node.ID].heldFrom))
	if code != 1 || !strings.Contains(out, "links        1 broken (gaps)") || !strings.Contains(out, "gap between checkpoints") || !strings.Contains(out, "AUDIT FAILED") {
		t.Fatalf("audit with checkpoint %d missing: exit %d: %s", victim, code, out)
	}
}
