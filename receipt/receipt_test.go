package receipt_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

const fiveLeaves = 5

func TestVerifyAcceptsEveryReceiptOfAnEntry(t *testing.T) {
	key := testKey(1)
	for n := 1; n <= 9; n++ {
		e := newEntry(t, key, 100, receipt.Hash{}, testDecisions(n))
		for i, r := range e.receipts {
			leaf, checkpoint, err := receipt.Verify(r, receipt.NewKeySet(publicOf(key)))
			if err != nil {
				t.Fatalf("%d leaves, receipt %d: %v", n, i, err)
			}
			if !reflect.DeepEqual(*leaf, e.leaves[i]) || *checkpoint != e.checkpoint {
				t.Fatalf("%d leaves, receipt %d: Verify returned %+v, %+v", n, i, leaf, checkpoint)
			}
		}
	}
}

// TestVerifyDetectsEveryBitFlip damages every byte of every part of every receipt
// of a five-leaf entry and wants the sentinel that names what broke. The middle
// receipt (three proof hashes) gets every bit flipped; the others the low bit of
// each byte, which keeps the test fast under -race.
func TestVerifyDetectsEveryBitFlip(t *testing.T) {
	key := testKey(1)
	keys := receipt.NewKeySet(publicOf(key))
	e := newEntry(t, key, 77, receipt.LeafHash([]byte("previous")), testDecisions(fiveLeaves))
	counts := map[error]int{}
	for position, good := range e.receipts {
		bits := 1
		if position == 2 {
			bits = 8
		}
		flip := func(part string, at, bit int, damage func(*receipt.Receipt), want error) {
			r := cloneReceipt(good)
			damage(r)
			leaf, checkpoint, err := receipt.Verify(r, keys)
			if leaf != nil || checkpoint != nil {
				t.Fatalf("receipt %d, %s byte %d bit %d: Verify returned values with its error", position, part, at, bit)
			}
			wantSentinel(t, err, want, fmt.Sprintf("receipt %d, %s byte %d bit %d", position, part, at, bit))
			counts[want]++
		}
		for at := range good.Leaf {
			for bit := range bits {
				flip("leaf", at, bit, func(r *receipt.Receipt) { r.Leaf[at] ^= 1 << bit },
					wantForLeafEdit(t, good.Leaf, at, bit))
			}
		}
		for j := range good.Proof {
			for at := range receipt.HashSize {
				for bit := range bits {
					flip(fmt.Sprintf("proof hash %d", j), at, bit,
						func(r *receipt.Receipt) { r.Proof[j][at] ^= 1 << bit }, receipt.ErrProof)
				}
			}
		}
		for at := range good.Checkpoint.Body {
			for bit := range bits {
				flip("checkpoint body", at, bit, func(r *receipt.Receipt) { r.Checkpoint.Body[at] ^= 1 << bit },
					wantForBodyEdit(len(good.Checkpoint.Body), at))
			}
		}
		for at := range good.Checkpoint.Signature {
			for bit := range bits {
				flip("signature", at, bit, func(r *receipt.Receipt) { r.Checkpoint.Signature[at] ^= 1 << bit },
					receipt.ErrSignature)
			}
		}
	}
	// Every kind of damage happened, so no expectation above is vacuous.
	for _, s := range []error{receipt.ErrMalformed, receipt.ErrUnknownKey, receipt.ErrSignature, receipt.ErrProof, receipt.ErrMismatch} {
		if counts[s] == 0 {
			t.Errorf("no bit flip produced %v", s)
		}
	}
}

// wantForLeafEdit is the error a flipped leaf bit must cause: ErrMalformed if the
// leaf no longer decodes; ErrMismatch if it now names another entry or a position
// outside the tree; else ErrProof, since the leaf hash changed.
func wantForLeafEdit(t *testing.T, leaf []byte, at, bit int) error {
	t.Helper()
	damaged := bytes.Clone(leaf)
	damaged[at] ^= 1 << bit
	switch {
	case at == 0: // version
		return receipt.ErrMalformed
	case at < 1+8: // Index
		return receipt.ErrMismatch
	case at < 1+8+4: // Position
		if binary.BigEndian.Uint32(damaged[9:13]) >= fiveLeaves {
			return receipt.ErrMismatch
		}
		return receipt.ErrProof
	case at < 1+8+4+8: // TimeUnixMs
		return receipt.ErrMismatch
	}
	// In the variable part a flip can break a length, the UTF-8 or the field
	// order (malformed), or just change text (the hash no longer matches).
	if _, err := receipt.DecodeLeaf(damaged); err != nil {
		return receipt.ErrMalformed
	}
	return receipt.ErrProof
}

// wantForBodyEdit is the error a flipped checkpoint body bit must cause, by region.
func wantForBodyEdit(bodyLen, at int) error {
	const domainLen = len("tollgate.checkpoint.v1\n")
	keyIDLenAt := bodyLen - 17 // 16-byte key id
	switch {
	case at < domainLen:
		return receipt.ErrMalformed
	case at < keyIDLenAt:
		// Index, Term, time, Prev, Root, LeafCount: still decodes (no single
		// flip of LeafCount 5 gives 0), so only the signature catches it.
		return receipt.ErrSignature
	case at == keyIDLenAt:
		return receipt.ErrMalformed
	default:
		return receipt.ErrUnknownKey
	}
}

func TestVerifyRejectsTruncationAndExtension(t *testing.T) {
	key := testKey(1)
	keys := receipt.NewKeySet(publicOf(key))
	e := newEntry(t, key, 77, receipt.Hash{}, testDecisions(fiveLeaves))
	good := e.receipts[2]
	type damage struct {
		name string
		edit func(*receipt.Receipt)
		want error
	}
	var damages []damage
	for n := range len(good.Leaf) {
		damages = append(damages, damage{fmt.Sprintf("leaf cut to %d", n),
			func(r *receipt.Receipt) { r.Leaf = r.Leaf[:n] }, receipt.ErrMalformed})
	}
	for n := range len(good.Checkpoint.Body) {
		damages = append(damages, damage{fmt.Sprintf("body cut to %d", n),
			func(r *receipt.Receipt) { r.Checkpoint.Body = r.Checkpoint.Body[:n] }, receipt.ErrMalformed})
	}
	for n := range len(good.Checkpoint.Signature) {
		damages = append(damages, damage{fmt.Sprintf("signature cut to %d", n),
			func(r *receipt.Receipt) { r.Checkpoint.Signature = r.Checkpoint.Signature[:n] }, receipt.ErrSignature})
	}
	for n := range len(good.Proof) {
		damages = append(damages, damage{fmt.Sprintf("proof cut to %d", n),
			func(r *receipt.Receipt) { r.Proof = r.Proof[:n] }, receipt.ErrProof})
	}
	damages = append(damages,
		damage{"leaf extended", func(r *receipt.Receipt) { r.Leaf = append(r.Leaf, 0) }, receipt.ErrMalformed},
		damage{"body extended", func(r *receipt.Receipt) { r.Checkpoint.Body = append(r.Checkpoint.Body, 0) }, receipt.ErrMalformed},
		damage{"signature extended", func(r *receipt.Receipt) { r.Checkpoint.Signature = append(r.Checkpoint.Signature, 0) }, receipt.ErrSignature},
		damage{"proof extended", func(r *receipt.Receipt) { r.Proof = append(r.Proof, r.Proof[0]) }, receipt.ErrProof},
		damage{"proof reversed", func(r *receipt.Receipt) { r.Proof[0], r.Proof[2] = r.Proof[2], r.Proof[0] }, receipt.ErrProof},
	)
	for _, d := range damages {
		r := cloneReceipt(good)
		d.edit(r)
		_, _, err := receipt.Verify(r, keys)
		wantSentinel(t, err, d.want, d.name)
	}
	_, _, err := receipt.Verify(nil, keys)
	wantSentinel(t, err, receipt.ErrMalformed, "nil receipt")
	_, _, err = receipt.Verify(&receipt.Receipt{}, keys)
	wantSentinel(t, err, receipt.ErrMalformed, "empty receipt")
}

func TestVerifyNeedsTheSigningKey(t *testing.T) {
	key := testKey(1)
	e := newEntry(t, key, 77, receipt.Hash{}, testDecisions(fiveLeaves))
	keySets := map[string]receipt.KeySet{
		"nil":         nil,
		"empty":       {},
		"another key": receipt.NewKeySet(publicOf(testKey(2))),
		"impostor":    {receipt.KeyID(publicOf(key)): publicOf(testKey(2))},
	}
	for name, keys := range keySets {
		_, _, err := receipt.Verify(e.receipts[0], keys)
		wantSentinel(t, err, receipt.ErrUnknownKey, name+" key set")
	}
	// After a rotation the set holds old and new keys; both sign valid receipts.
	rotated := newEntry(t, testKey(2), 78, e.checkpoint.Hash(), testDecisions(1))
	both := receipt.NewKeySet(publicOf(key), publicOf(testKey(2)))
	for _, r := range []*receipt.Receipt{e.receipts[0], rotated.receipts[0]} {
		if _, _, err := receipt.Verify(r, both); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyRejectsLeavesFromElsewhere moves whole, valid pieces between
// receipts: every piece is genuine, only the combination is a lie.
func TestVerifyRejectsLeavesFromElsewhere(t *testing.T) {
	key := testKey(1)
	keys := receipt.NewKeySet(publicOf(key))
	e := newEntry(t, key, 77, receipt.Hash{}, testDecisions(fiveLeaves))
	other := newEntry(t, key, 78, e.checkpoint.Hash(), testDecisions(fiveLeaves))

	moved := cloneReceipt(e.receipts[1])
	moved.Checkpoint = other.signed // leaf from entry 77, checkpoint of 78
	_, _, err := receipt.Verify(moved, keys)
	wantSentinel(t, err, receipt.ErrMismatch, "leaf under another entry's checkpoint")

	swapped := cloneReceipt(e.receipts[1])
	swapped.Leaf = e.receipts[3].Leaf // right entry, wrong proof
	_, _, err = receipt.Verify(swapped, keys)
	wantSentinel(t, err, receipt.ErrProof, "leaf with another leaf's proof")

	// A re-encoded leaf with another time or a position past the end names a
	// place the checkpoint does not have.
	for name, edit := range map[string]func(*receipt.Leaf){
		"time":     func(l *receipt.Leaf) { l.TimeUnixMs++ },
		"position": func(l *receipt.Leaf) { l.Position = fiveLeaves },
	} {
		leaf := e.leaves[4]
		edit(&leaf)
		b, err := leaf.Encode()
		if err != nil {
			t.Fatal(err)
		}
		r := cloneReceipt(e.receipts[4])
		r.Leaf = b
		_, _, err = receipt.Verify(r, keys)
		wantSentinel(t, err, receipt.ErrMismatch, name)
	}
}

func TestVerifySingleLeafEntry(t *testing.T) {
	key := testKey(1)
	e := newEntry(t, key, 5, receipt.Hash{}, testDecisions(1))
	r := e.receipts[0]
	if len(r.Proof) != 0 || e.checkpoint.Root != receipt.LeafHash(r.Leaf) {
		t.Fatalf("one-leaf entry: proof %v, root %s", r.Proof, e.checkpoint.Root)
	}
	if _, _, err := receipt.Verify(r, receipt.NewKeySet(publicOf(key))); err != nil {
		t.Fatal(err)
	}
}
