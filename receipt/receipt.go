// Package receipt owns the proofs behind tollgate's second promise: every decision
// is provable offline with only the cluster's public key.
//
// Each committed log entry that holds decisions yields a Checkpoint: the entry's
// index, term and log time, the Merkle root of its decision leaves and the hash of
// the previous checkpoint, signed with Ed25519. A Receipt is one Leaf, its
// inclusion proof and the signed checkpoint; Verify checks all of it.
//
// Everything here is a pure function of its arguments (no clock, no randomness, no
// I/O), so every replica derives byte-identical checkpoints from the same log. The
// byte formats are specified in docs/receipts.md; the reasons are in DESIGN.md.
package receipt

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns wraps exactly one of them, so
// callers branch with errors.Is and show Error() to people.
var (
	ErrMalformed  = errors.New("malformed") // decoding failed / non-canonical
	ErrUnknownKey = errors.New("unknown key")
	ErrSignature  = errors.New("bad signature")
	ErrProof      = errors.New("bad inclusion proof")
	ErrMismatch   = errors.New("leaf does not match checkpoint")
	ErrChain      = errors.New("broken chain")
)

// errorf returns "receipt: <sentinel>: <reason>" wrapping sentinel.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("receipt: %w: %s", sentinel, fmt.Sprintf(format, args...))
}

// Receipt proves one decision.
type Receipt struct {
	Leaf       []byte // Leaf.Encode()
	Proof      []Hash // inclusion proof of the leaf (position Leaf.Position) in the entry tree
	Checkpoint SignedCheckpoint
}

// Verify checks everything a receipt claims: the checkpoint decodes, its key is in
// keys and the signature is valid; the leaf decodes canonically; leaf.Index ==
// checkpoint.Index; leaf.TimeUnixMs == checkpoint.TimeUnixMs; leaf.Position <
// LeafCount; and the proof links LeafHash(leaf) at Position in a tree of LeafCount
// leaves to Root. It returns the decoded leaf and checkpoint only if all hold.
//
// Verify says nothing about where the checkpoint sits in the chain; VerifyLink
// does that for consecutive checkpoints.
func Verify(r *Receipt, keys KeySet) (*Leaf, *Checkpoint, error) {
	if r == nil {
		return nil, nil, errorf(ErrMalformed, "nil receipt")
	}
	// The signed checkpoint is the trust anchor, so it is checked first: nothing
	// in the leaf or proof means anything until it holds.
	checkpoint, err := VerifyCheckpoint(r.Checkpoint, keys)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := DecodeLeaf(r.Leaf)
	if err != nil {
		return nil, nil, err
	}
	if err := matchLeaf(leaf, checkpoint); err != nil {
		return nil, nil, err
	}
	leafHash := LeafHash(r.Leaf)
	err = VerifyInclusion(leafHash, uint64(leaf.Position), uint64(checkpoint.LeafCount), r.Proof, checkpoint.Root)
	if err != nil {
		return nil, nil, err
	}
	return leaf, checkpoint, nil
}

// matchLeaf checks that the leaf claims to belong to the checkpoint's entry.
func matchLeaf(leaf *Leaf, checkpoint *Checkpoint) error {
	switch {
	case leaf.Index != checkpoint.Index:
		return errorf(ErrMismatch, "leaf is from log index %d, checkpoint is for index %d",
			leaf.Index, checkpoint.Index)
	case leaf.TimeUnixMs != checkpoint.TimeUnixMs:
		return errorf(ErrMismatch, "leaf has log time %d ms, checkpoint %d has %d ms",
			leaf.TimeUnixMs, checkpoint.Index, checkpoint.TimeUnixMs)
	case leaf.Position >= checkpoint.LeafCount:
		return errorf(ErrMismatch, "leaf position %d is outside checkpoint %d's %d leaves",
			leaf.Position, checkpoint.Index, checkpoint.LeafCount)
	}
	return nil
}
