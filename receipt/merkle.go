package receipt

import (
	"crypto/sha256"
	"math/bits"
)

// Root is the RFC 9162 §2.1.1 Merkle Tree Hash over leaf hashes (already
// LeafHash'ed): one leaf is its own root, and a larger tree hashes the subtree of
// the first k leaves with the rest, k being the largest power of two below the
// size. Root(nil) is SHA-256 of the empty string.
func Root(leaves []Hash) Hash {
	if len(leaves) == 0 {
		return sha256.Sum256(nil)
	}
	return subtreeRoot(leaves)
}

// subtreeRoot is Root for a non-empty list.
func subtreeRoot(leaves []Hash) Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := splitPoint(len(leaves))
	return NodeHash(subtreeRoot(leaves[:k]), subtreeRoot(leaves[k:]))
}

// splitPoint is the largest power of two smaller than n, for n >= 2.
func splitPoint(n int) int {
	return 1 << (bits.Len(uint(n-1)) - 1)
}

// InclusionProof is the RFC 9162 §2.1.3.1 audit path for leaf i of leaves: the
// sibling subtree roots from the leaf up to the root, nearest first. A tree of one
// leaf has an empty proof.
func InclusionProof(leaves []Hash, i int) ([]Hash, error) {
	if i < 0 || i >= len(leaves) {
		return nil, errorf(ErrProof, "no leaf %d in a tree of %d leaves", i, len(leaves))
	}
	proof := make([]Hash, 0, bits.Len(uint(len(leaves)-1)))
	return appendPath(proof, leaves, i), nil
}

// appendPath appends PATH(i, leaves) to proof. The recursion first descends into
// the half holding leaf i, so the deepest sibling comes first.
func appendPath(proof []Hash, leaves []Hash, i int) []Hash {
	if len(leaves) <= 1 {
		return proof
	}
	k := splitPoint(len(leaves))
	if i < k {
		proof = appendPath(proof, leaves[:k], i)
		return append(proof, subtreeRoot(leaves[k:]))
	}
	proof = appendPath(proof, leaves[k:], i-k)
	return append(proof, subtreeRoot(leaves[:k]))
}

// VerifyInclusion runs RFC 9162 §2.1.3.2: it recomputes the root from leaf, its
// index, the tree size and the proof, and compares it with root. It returns an
// error wrapping ErrProof if index >= size, the proof has the wrong length for
// (index, size), or the roots differ.
func VerifyInclusion(leaf Hash, index, size uint64, proof []Hash, root Hash) error {
	if index >= size {
		return errorf(ErrProof, "leaf index %d is not below tree size %d", index, size)
	}
	fn, sn := index, size-1
	r := leaf
	for _, p := range proof {
		if sn == 0 {
			return errorf(ErrProof, "proof for leaf %d of %d has %d hashes, too many", index, size, len(proof))
		}
		if fn&1 == 1 || fn == sn {
			r = NodeHash(p, r)
			// Climb past levels where this node is a right-edge node without a
			// sibling: those levels do not appear in the proof.
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = NodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return errorf(ErrProof, "proof for leaf %d of %d has %d hashes, too few", index, size, len(proof))
	}
	if r != root {
		return errorf(ErrProof, "leaf %d of %d leads to root %s, not %s", index, size, r, root)
	}
	return nil
}
