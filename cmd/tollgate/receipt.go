package main

// tollgate keygen and tollgate receipt: make a signing key, fetch receipts,
// verify them offline with the public key alone, and audit the chain.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate/tollgate/client"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
	"github.com/tollgate/tollgate/receipt"
)

func init() {
	clientCommands = append(clientCommands, newKeygenCommand, newReceiptCommand)
}

// receiptFileMax bounds a receipt file read by verify (a receipt is a few KiB).
const receiptFileMax = 1 << 20

func receiptService(c *client.Client) tollgatev1connect.ReceiptServiceClient { return c.Receipts }

func newKeygenCommand() *cobra.Command {
	var out string
	var force, gossip, clusterToken bool
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make an Ed25519 receipt signing key pair",
		Long: `Make an Ed25519 key pair for signing receipts: --out FILE gets the private
key (PEM, PKCS#8, mode 0600) and FILE.pub the public key (PEM, PKIX).

Start the first node of a new cluster with 'tollgate serve --signing-key
FILE' to have the cluster sign with this key, and hand FILE.pub to whoever
verifies receipts ('tollgate receipt verify --public-key FILE.pub').
Without --signing-key the first leader generates a key itself; 'tollgate
receipt keys' prints the public keys of a running cluster.

Prints the key id, the first 8 bytes of SHA-256 of the public key in hex,
as checkpoints name it.`,
		Example: `  tollgate keygen --out cluster.key
  tollgate serve --node-id n1 --data-dir d1 --signing-key cluster.key
  tollgate keygen --gossip --out gossip.key     # for serve --gossip-key-file
  tollgate keygen --cluster-token --out cluster.token   # for serve --cluster-token-file`,
		Args: argsExactly(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErrorf(cmd, "--out FILE is required")
			}
			if gossip && clusterToken {
				return usageErrorf(cmd, "--gossip and --cluster-token make different files; pick one")
			}
			if gossip {
				return secretKeygen(cmd, out, force, "gossip key")
			}
			if clusterToken {
				return secretKeygen(cmd, out, force, "cluster token")
			}
			return keygen(cmd, out, force)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file for the private key; the public key goes to FILE.pub")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	cmd.Flags().BoolVar(&gossip, "gossip", false, "instead: a random 32-byte gossip encryption key, base64, for 'serve --gossip-key-file' (mode 0600)")
	cmd.Flags().BoolVar(&clusterToken, "cluster-token", false, "instead: a random 32-byte token servers show each other's APIs, base64, for 'serve --cluster-token-file' (mode 0600)")
	return withUsageErrors(cmd)
}

func keygen(cmd *cobra.Command, out string, force bool) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	privPEM, err := receipt.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	pubPEM, err := receipt.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{out, privPEM, 0o600}, {out + ".pub", pubPEM, 0o644}} {
		file, err := os.OpenFile(f.path, flags, f.mode)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				return localError("%s exists; use --force to overwrite it", f.path)
			}
			return localError("%v", err)
		}
		if _, err := file.Write(f.data); err != nil {
			file.Close()
			return localError("write %s: %v", f.path, err)
		}
		if err := commitFile(file, f.path); err != nil {
			return localError("write %s: %v", f.path, err)
		}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "key id       %s\nprivate key  %s (keep it secret)\npublic key   %s.pub\n", receipt.KeyID(pub), out, out)
	return nil
}

func newReceiptCommand() *cobra.Command {
	cmd := withUsageErrors(newGroupCommand("receipt",
		"Fetch, verify and audit signed receipts of decisions",
		`Every decision (consume, reserve, commit, release, rate-limit check, and
every create, update and delete) gets a receipt: the decision's canonical
leaf, a Merkle inclusion proof, and the checkpoint of its log entry signed
with the cluster's Ed25519 key. Checkpoints chain by hash, so a missing or
edited one shows. docs/receipts.md specifies the format.

'get' fetches a receipt as JSON; 'verify' checks one offline with nothing
but public keys; 'audit' walks a range of the chain; 'keys' prints the
cluster's public keys; 'rotate-key' makes the cluster sign with a new key.`,
		`  tollgate receipt get --tenant acme --request-id r-1 > r1.json
  tollgate receipt keys > cluster.pub
  tollgate receipt verify --public-key cluster.pub r1.json
  tollgate receipt audit --from 1 --public-key cluster.pub`))
	cf := addClientFlags(cmd, false)
	cmd.AddCommand(
		newReceiptGetCommand(cf),
		newReceiptVerifyCommand(),
		newReceiptAuditCommand(cf),
		newReceiptKeysCommand(cf),
		newReceiptRotateCommand(cf),
	)
	return cmd
}

func newReceiptGetCommand(cf *clientFlags) *cobra.Command {
	var tenant, requestID, out string
	var index uint64
	var position uint32
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Fetch the receipt of one decision as JSON",
		Long: `Fetch the receipt of one decision, by the request id that made it (with
--tenant) or by its reference (--index and --position, as replies carry
in receiptRef). The receipt is printed as the API's JSON, which 'tollgate
receipt verify' reads; --out writes it to a file instead.

The answering node serves the receipt from its own store after a
linearizable read, so any node gives the same bytes.`,
		Example: `  tollgate receipt get --tenant acme --request-id r-1 --out r1.json
  tollgate receipt get --index 42 --position 3`,
		Args: argsExactly(),
	}
	rf := addReadFlags(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of --request-id")
	cmd.Flags().StringVar(&requestID, "request-id", "", "the request id of the decision")
	cmd.Flags().Uint64Var(&index, "index", 0, "log index of the decision's entry")
	cmd.Flags().Uint32Var(&position, "position", 0, "the decision's position in the entry (with --index)")
	cmd.Flags().StringVar(&out, "out", "", "write the receipt to this file instead of stdout")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req := &tollgatev1.GetReceiptRequest{Consistency: rf.consistency.value, MaxStaleness: rf.maxStaleness.String()}
		switch {
		case requestID != "" && index == 0:
			if tenant == "" {
				return usageErrorf(cmd, "--request-id needs --tenant (or TOLLGATE_TENANT)")
			}
			req.Tenant, req.RequestId = tenant, requestID
		case requestID == "" && index != 0:
			req.Ref = &tollgatev1.ReceiptRef{LogIndex: index, Position: position}
		default:
			return usageErrorf(cmd, "give either --request-id (with --tenant) or --index (with --position)")
		}
		resp, err := unary(cmd, cf, receiptService, tollgatev1connect.ReceiptServiceClient.GetReceipt, req)
		if err != nil {
			return err
		}
		b, err := jsonOptions.Marshal(resp.Receipt)
		if err != nil {
			return localError("encode receipt: %v", err)
		}
		b = append(b, '\n')
		if out == "" {
			_, err = cmd.OutOrStdout().Write(b)
			return err
		}
		if err := writeFileAtomic(out, b); err != nil {
			return localError("write %s: %v", out, err)
		}
		l := resp.Receipt.DecodedLeaf
		fmt.Fprintf(cmd.OutOrStdout(), "receipt of %s %s/%s (%s) at log index %d, position %d written to %s\n",
			l.GetOperation(), l.GetTenant(), l.GetObject(), l.GetOutcome(), resp.Ref.GetLogIndex(), resp.Ref.GetPosition(), out)
		return nil
	}
	return cmd
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	return commitFile(tmp, path)
}

// publicKeyFlags is the repeatable --public-key flag.
type publicKeyFlags struct{ files []string }

func addPublicKeyFlag(cmd *cobra.Command, pk *publicKeyFlags, usage string) {
	cmd.Flags().StringArrayVar(&pk.files, "public-key", nil, usage)
}

func (pk *publicKeyFlags) load() (receipt.KeySet, error) {
	keys := receipt.KeySet{}
	for _, f := range pk.files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, localError("--public-key: %v", err)
		}
		ks, err := receipt.ParsePublicKeys(b)
		if err != nil {
			return nil, localError("--public-key %s: %v", f, err)
		}
		for id, k := range ks {
			keys[id] = k
		}
	}
	return keys, nil
}

func newReceiptVerifyCommand() *cobra.Command {
	var pk publicKeyFlags
	cmd := &cobra.Command{
		Use:   "verify FILE|-",
		Short: "Verify a receipt offline with the cluster's public key(s)",
		Long: `Verify a receipt (the JSON of 'tollgate receipt get', or any reply that holds
one in a "receipt" field) with nothing but public keys: the checkpoint's
signature, that the leaf belongs to the checkpoint's entry, and the
inclusion proof from the leaf to the signed root. No node is contacted.

Exit code 0 and "VALID" with the decision when every check holds; exit code
1 and "INVALID" with the reason otherwise.`,
		Example: `  tollgate receipt verify --public-key cluster.key.pub r1.json
  tollgate receipt get --tenant acme --request-id r-1 | tollgate receipt verify --public-key cluster.pub -`,
		Args: argsExactly("FILE|-"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(pk.files) == 0 {
				return usageErrorf(cmd, "--public-key FILE is required (the cluster's key: tollgate keygen's .pub, or 'tollgate receipt keys')")
			}
			keys, err := pk.load()
			if err != nil {
				return err
			}
			data, err := readInput(cmd, args[0])
			if err != nil {
				return err
			}
			w, err := parseReceiptJSON(data)
			if err != nil {
				return &exitError{code: exitFailure, msg: fmt.Sprintf("INVALID: %v", err)}
			}
			leaf, cp, err := client.VerifyReceipt(w, keys)
			if err != nil {
				return &exitError{code: exitFailure, msg: fmt.Sprintf("INVALID: %v", err)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "VALID: %s %s/%s %s", leaf.Operation, leaf.Tenant, leaf.Object, leaf.Outcome)
			if leaf.Reason != "" {
				fmt.Fprintf(cmd.OutOrStdout(), " (%s)", leaf.Reason)
			}
			fmt.Fprintf(cmd.OutOrStdout(), " at log index %d position %d, term %d, signed by key %s\n", leaf.Index, leaf.Position, cp.Term, cp.KeyID)
			return nil
		},
	}
	addPublicKeyFlag(cmd, &pk, "PEM file with one or more public keys (repeatable)")
	return withUsageErrors(cmd)
}

func readInput(cmd *cobra.Command, path string) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, localError("%v", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, receiptFileMax+1))
	if err != nil {
		return nil, localError("read %s: %v", path, err)
	}
	if len(data) > receiptFileMax {
		return nil, localError("%s is larger than %d bytes; not a receipt", path, receiptFileMax)
	}
	return data, nil
}

// parseReceiptJSON reads a Receipt, or a message holding one in "receipt".
func parseReceiptJSON(data []byte) (*tollgatev1.Receipt, error) {
	data = bytes.TrimSpace(data)
	w := &tollgatev1.Receipt{}
	err := protojson.Unmarshal(data, w)
	if err == nil && len(w.Leaf) > 0 {
		return w, nil
	}
	holder := &tollgatev1.GetReceiptResponse{}
	if herr := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, holder); herr == nil && holder.Receipt != nil {
		return holder.Receipt, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not a receipt: %v", receipt.ErrMalformed, err)
	}
	return nil, fmt.Errorf("%w: the receipt has no leaf", receipt.ErrMalformed)
}

func newReceiptAuditCommand(cf *clientFlags) *cobra.Command {
	var pk publicKeyFlags
	var from, to uint64
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Walk the checkpoint chain and verify every signature and link",
		Long: `Fetch the checkpoints with log index in [--from, --to] from the node at
--addr and check each one: the signature with the public keys, and that it
names the previous checkpoint's hash (a missing or edited checkpoint breaks
this link and is reported as a gap). Entries without decisions have no
checkpoint, so indexes between checkpoints are not gaps.

Keys come from --public-key files; without them the command asks the cluster
for its keys and says so (that trusts the node you audit).

Prints a summary; exit code 1 if any check failed or the node does not hold
the whole range (see "held from").`,
		Example: `  tollgate receipt audit --from 1 --public-key cluster.pub
  tollgate receipt audit --from 5000 --to 9000 --addr 127.0.0.1:7170`,
		Args: argsExactly(),
	}
	addPublicKeyFlag(cmd, &pk, "PEM file with public keys (repeatable; default: ask the cluster)")
	cmd.Flags().Uint64Var(&from, "from", 1, "first log index")
	cmd.Flags().Uint64Var(&to, "to", 0, "last log index (0: the node's last checkpoint)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if to != 0 && to < from {
			return usageErrorf(cmd, "--to %d is before --from %d", to, from)
		}
		keys, err := pk.load()
		if err != nil {
			return err
		}
		var verdict error // the audit's own finding, kept apart from call errors
		_, err = call(cmd, cf, func(ctx context.Context, c *client.Client) (struct{}, error) {
			if len(keys) == 0 {
				resp, err := c.Receipts.GetPublicKeys(ctx, connect.NewRequest(&tollgatev1.GetPublicKeysRequest{}))
				if err != nil {
					return struct{}{}, err
				}
				if keys, err = client.PublicKeys(resp.Msg); err != nil {
					return struct{}{}, err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "note: using the %d public key(s) the cluster reports; pass --public-key to audit against keys you trust\n", len(keys))
			}
			err := audit(ctx, cmd, c, keys, from, to)
			var ee *exitError
			if errors.As(err, &ee) {
				verdict = err
				return struct{}{}, nil
			}
			return struct{}{}, err
		})
		if err != nil {
			return err
		}
		return verdict
	}
	return cmd
}

// auditReport is what audit found.
type auditReport struct {
	checked, badSignatures, gaps int
	first, last                  uint64
	heldFrom                     uint64
	missing                      []*tollgatev1.IndexRange
	problems                     []string
}

// missingBetween reports whether the node says it lacks receipts somewhere
// in (a, b): a broken link across such a range is a known hole, not a gap.
func (r *auditReport) missingBetween(a, b uint64) bool {
	for _, m := range r.missing {
		if m.FromIndex < b && m.ToIndex > a {
			return true
		}
	}
	return false
}

// auditProblemsShown bounds how many problems are listed one by one.
const auditProblemsShown = 20

func audit(ctx context.Context, cmd *cobra.Command, c *client.Client, keys receipt.KeySet, from, to uint64) error {
	rep := auditReport{}
	var prev *receipt.Checkpoint
	problem := func(format string, args ...any) {
		rep.problems = append(rep.problems, fmt.Sprintf(format, args...))
	}
	next := from
	for page := 0; ; page++ {
		resp, err := c.Receipts.ListCheckpoints(ctx, connect.NewRequest(&tollgatev1.ListCheckpointsRequest{FromIndex: next, ToIndex: to, PageSize: 1000}))
		if err != nil {
			return err
		}
		m := resp.Msg
		rep.heldFrom = m.HeldFromIndex
		rep.missing = m.Missing
		for _, sc := range m.Checkpoints {
			cp, err := receipt.VerifyCheckpoint(receipt.SignedCheckpoint{Body: sc.Body, Signature: sc.Signature}, keys)
			rep.checked++
			if err != nil {
				rep.badSignatures++
				problem("checkpoint %d: %v", sc.GetDecoded().GetLogIndex(), err)
				prev = nil
				continue
			}
			if rep.first == 0 {
				rep.first = cp.Index
			}
			rep.last = cp.Index
			if prev != nil {
				if err := receipt.VerifyLink(prev, cp); err != nil && !rep.missingBetween(prev.Index, cp.Index) {
					rep.gaps++
					problem("gap between checkpoints %d and %d: %v", prev.Index, cp.Index, err)
				}
			}
			prev = cp
		}
		if page > 0 && page%10 == 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "audited %d checkpoints, up to index %d\n", rep.checked, rep.last)
		}
		if m.NextFromIndex == 0 {
			break
		}
		next = m.NextFromIndex
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "checkpoints  %d (log index %s to %s)\n", rep.checked, orDash(formatIndex(rep.first)), orDash(formatIndex(rep.last)))
	fmt.Fprintf(out, "held from    %d\n", rep.heldFrom)
	fmt.Fprintf(out, "signatures   %d bad\n", rep.badSignatures)
	fmt.Fprintf(out, "links        %d broken (gaps)\n", rep.gaps)
	var missing []string
	for _, m := range rep.missing {
		if m.ToIndex >= from && (to == 0 || m.FromIndex <= to) {
			missing = append(missing, fmt.Sprintf("%d-%d", m.FromIndex, m.ToIndex))
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(out, "missing      %s (installed from a snapshot; the node is fetching them from its peers)\n", strings.Join(missing, ", "))
	}
	for i, p := range rep.problems {
		if i == auditProblemsShown {
			fmt.Fprintf(out, "... and %d more\n", len(rep.problems)-i)
			break
		}
		fmt.Fprintf(out, "  %s\n", p)
	}
	switch {
	case len(rep.problems) > 0:
		return &exitError{code: exitFailure, msg: "AUDIT FAILED"}
	case len(missing) > 0:
		return &exitError{code: exitFailure, msg: "AUDIT INCOMPLETE: this node does not hold every receipt of the range yet; audit another node or retry"}
	case rep.heldFrom > from:
		return &exitError{code: exitFailure, msg: fmt.Sprintf("AUDIT INCOMPLETE: this node holds receipts from index %d, after --from %d", rep.heldFrom, from)}
	}
	fmt.Fprintln(out, "AUDIT OK")
	return nil
}

func formatIndex(v uint64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatUint(v, 10)
}

func newReceiptKeysCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Print the cluster's receipt signing public keys (PEM)",
		Long: `Print every public key that has signed checkpoints, oldest first, as PEM
blocks that 'tollgate receipt verify --public-key' reads. --output table
lists key ids and the log index from which each one signs instead.`,
		Example: `  tollgate receipt keys > cluster.pub
  tollgate receipt keys --output table`,
		Args: argsExactly(),
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := unary(cmd, cf, receiptService, tollgatev1connect.ReceiptServiceClient.GetPublicKeys, &tollgatev1.GetPublicKeysRequest{})
		if err != nil {
			return err
		}
		if !cmd.Flags().Changed("output") {
			fmt.Fprintln(cmd.OutOrStdout(), "# tollgate signing keys, oldest first")
			for _, k := range resp.Keys {
				fmt.Fprintf(cmd.OutOrStdout(), "# key %s signs from index %d\n%s", k.KeyId, k.FromIndex, k.PublicKeyPem)
			}
			return nil
		}
		return printReply(cmd, cf, resp, func(w io.Writer) {
			rows := [][]string{}
			for _, k := range resp.Keys {
				rows = append(rows, []string{k.KeyId, formatUint(k.FromIndex), formatBool(k.Active)})
			}
			writeTable(w, []string{"KEY ID", "FROM INDEX", "ACTIVE"}, rows)
			fmt.Fprintf(w, "chain head\t%d %s\n", resp.HeadIndex, orDash(resp.HeadHash))
		})
	}
	return cmd
}

func newReceiptRotateCommand(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Make the cluster sign with a newly generated key",
		Long: `Make the leader generate a new Ed25519 signing key and replicate it. The
rotation entry is signed with the old key and names the new one, so the
chain vouches for the change; later checkpoints are signed with the new key.
Old public keys stay listed ('tollgate receipt keys'), so old receipts still
verify. Not idempotent: a retry after an unknown outcome may rotate twice.`,
		Example: `  tollgate receipt rotate-key`,
		Args:    argsExactly(),
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		resp, err := unary(cmd, cf, receiptService, tollgatev1connect.ReceiptServiceClient.RotateSigningKey, &tollgatev1.RotateSigningKeyRequest{})
		if err != nil {
			return err
		}
		return printFields(cmd, cf, resp,
			field{"key id", resp.Key.GetKeyId()},
			field{"signs from", formatUint(resp.Key.GetFromIndex())},
			field{"log index", formatLogIndex(resp.LogIndex)})
	}
	return cmd
}

// secretKeygen writes a random 32-byte secret, base64, mode 0600.
func secretKeygen(cmd *cobra.Command, out string, force bool, what string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	file, err := os.OpenFile(out, flags, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return localError("%s exists; use --force to overwrite it", out)
		}
		return localError("%v", err)
	}
	if _, err := file.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		file.Close()
		return localError("write %s: %v", out, err)
	}
	if err := commitFile(file, out); err != nil {
		return localError("write %s: %v", out, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s  %s (keep it secret; give every node the same file)\n", what, out)
	return nil
}
