package receipt

import (
	"crypto/sha256"
	"encoding/hex"
)

// HashSize is the size of every hash in receipts: SHA-256.
const HashSize = 32

// Domain-separation prefixes. Each kind of hashed object gets its own first byte,
// so a leaf can never be passed off as an interior node (the second-preimage
// attack RFC 9162 prevents this way) and neither can be passed off as a checkpoint.
const (
	leafHashPrefix       byte = 0x00
	nodeHashPrefix       byte = 0x01
	checkpointHashPrefix byte = 0x02
)

// Hash is a SHA-256 digest.
type Hash [HashSize]byte

// String returns the hash in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash parses 64 hex digits (either case).
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*HashSize {
		return h, errorf(ErrMalformed, "hash %q has %d characters, want %d hex digits", s, len(s), 2*HashSize)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return Hash{}, errorf(ErrMalformed, "hash %q is not hex: %v", s, err)
	}
	return h, nil
}

// LeafHash is the Merkle leaf hash of an encoded leaf: SHA-256(0x00 || encodedLeaf).
func LeafHash(encodedLeaf []byte) Hash {
	h := sha256.New()
	h.Write([]byte{leafHashPrefix})
	h.Write(encodedLeaf)
	var out Hash
	h.Sum(out[:0])
	return out
}

// NodeHash is the hash of an interior node: SHA-256(0x01 || left || right).
func NodeHash(left, right Hash) Hash {
	var buf [1 + 2*HashSize]byte
	buf[0] = nodeHashPrefix
	copy(buf[1:], left[:])
	copy(buf[1+HashSize:], right[:])
	return sha256.Sum256(buf[:])
}
