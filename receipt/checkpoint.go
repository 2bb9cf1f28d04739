package receipt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

const (
	// KeyIDMax is the longest key id a checkpoint can carry, in bytes.
	KeyIDMax = 64

	// checkpointDomain starts every signed body, so a tollgate signature can never
	// be taken for a signature over anything else, nor over another version.
	checkpointDomain = "tollgate.checkpoint.v1\n"
	// checkpointFixedBytes is the body without the key id bytes: domain, Index,
	// Term, TimeUnixMs, Prev, Root, LeafCount and the key id length byte.
	checkpointFixedBytes = len(checkpointDomain) + 8 + 8 + 8 + HashSize + HashSize + 4 + 1
)

// Checkpoint is what is signed for one log entry.
type Checkpoint struct {
	Index      uint64 // log index
	Term       uint64 // Raft term of the entry
	TimeUnixMs int64  // leader time stamped on the entry
	Prev       Hash   // Hash() of the previous checkpoint; zero Hash for the first
	Root       Hash   // Root of the entry's leaves
	LeafCount  uint32 // number of leaves (>= 1)
	KeyID      string // id of the signing key (KeyID of its public key)
}

// Encode returns the canonical signed body: the ASCII domain prefix
// "tollgate.checkpoint.v1\n" followed by fixed-width big-endian fields in
// declaration order, KeyID as 1 length byte + bytes.
//
// Encode panics if KeyID is longer than KeyIDMax bytes: checkpoints are built
// with KeyID(pub) (16 bytes) or by DecodeCheckpoint, so a longer id is a bug in
// the caller, and signing a body no verifier can decode must not happen quietly.
func (c *Checkpoint) Encode() []byte {
	return c.appendBody(make([]byte, 0, checkpointFixedBytes+len(c.KeyID)))
}

func (c *Checkpoint) appendBody(b []byte) []byte {
	if len(c.KeyID) > KeyIDMax {
		panic(fmt.Sprintf("receipt: checkpoint %d key id is %d bytes, more than %d", c.Index, len(c.KeyID), KeyIDMax))
	}
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint64(b, c.Index)
	b = binary.BigEndian.AppendUint64(b, c.Term)
	b = binary.BigEndian.AppendUint64(b, uint64(c.TimeUnixMs))
	b = append(b, c.Prev[:]...)
	b = append(b, c.Root[:]...)
	b = binary.BigEndian.AppendUint32(b, c.LeafCount)
	b = append(b, byte(len(c.KeyID)))
	return append(b, c.KeyID...)
}

// DecodeCheckpoint decodes a signed body. It is strict: the domain prefix must
// match, the key id must be 1..KeyIDMax bytes and fill the rest of the body
// exactly, and LeafCount must be at least 1. Errors wrap ErrMalformed.
func DecodeCheckpoint(body []byte) (*Checkpoint, error) {
	if len(body) < checkpointFixedBytes {
		return nil, errorf(ErrMalformed, "checkpoint body is %d bytes, shorter than the %d-byte minimum",
			len(body), checkpointFixedBytes)
	}
	if string(body[:len(checkpointDomain)]) != checkpointDomain {
		return nil, errorf(ErrMalformed, "checkpoint body does not start with %q", checkpointDomain)
	}
	b := body[len(checkpointDomain):]
	c := &Checkpoint{
		Index:      binary.BigEndian.Uint64(b[0:8]),
		Term:       binary.BigEndian.Uint64(b[8:16]),
		TimeUnixMs: int64(binary.BigEndian.Uint64(b[16:24])),
		LeafCount:  binary.BigEndian.Uint32(b[88:92]),
	}
	copy(c.Prev[:], b[24:56])
	copy(c.Root[:], b[56:88])
	keyIDLen, keyID := int(b[92]), b[93:]
	switch {
	case keyIDLen == 0 || keyIDLen > KeyIDMax:
		return nil, errorf(ErrMalformed, "checkpoint %d: key id length %d is not in 1..%d", c.Index, keyIDLen, KeyIDMax)
	case len(keyID) != keyIDLen:
		return nil, errorf(ErrMalformed, "checkpoint %d: key id length says %d bytes but %d follow",
			c.Index, keyIDLen, len(keyID))
	case c.LeafCount == 0:
		return nil, errorf(ErrMalformed, "checkpoint %d has no leaves", c.Index)
	}
	c.KeyID = string(keyID)
	return c, nil
}

// Hash is the chain link: SHA-256(0x02 || Encode()). It panics like Encode.
func (c *Checkpoint) Hash() Hash {
	b := make([]byte, 0, 1+checkpointFixedBytes+len(c.KeyID))
	b = append(b, checkpointHashPrefix)
	return sha256.Sum256(c.appendBody(b))
}

// Sign signs c.Encode() with key. Ed25519 is deterministic, so every replica
// signing the same checkpoint with the same key produces the same bytes. The
// caller sets c.KeyID to KeyID of key's public key; Sign does not check it. Like
// ed25519.Sign, Sign panics if key is not ed25519.PrivateKeySize bytes.
func Sign(key ed25519.PrivateKey, c *Checkpoint) []byte {
	return ed25519.Sign(key, c.Encode())
}

// SignedCheckpoint is a checkpoint's body and signature as stored and sent.
type SignedCheckpoint struct {
	Body      []byte // Checkpoint.Encode()
	Signature []byte
}

// VerifyCheckpoint decodes the body, finds its KeyID in keys and checks the
// signature over the body as given. Errors wrap ErrMalformed, ErrUnknownKey or
// ErrSignature.
func VerifyCheckpoint(sc SignedCheckpoint, keys KeySet) (*Checkpoint, error) {
	c, err := DecodeCheckpoint(sc.Body)
	if err != nil {
		return nil, err
	}
	pub, ok := keys[c.KeyID]
	if !ok {
		return nil, errorf(ErrUnknownKey, "checkpoint %d is signed by key %q, which is not among the %d trusted keys",
			c.Index, c.KeyID, len(keys))
	}
	// A key set entry must be the key its id names; otherwise a checkpoint could
	// claim one key and be checked against another. This also keeps a short key
	// away from ed25519.Verify, which panics on one.
	if len(pub) != ed25519.PublicKeySize || KeyID(pub) != c.KeyID {
		return nil, errorf(ErrUnknownKey, "checkpoint %d: the trusted key listed as %q is not a %d-byte Ed25519 key with that id",
			c.Index, c.KeyID, ed25519.PublicKeySize)
	}
	if len(sc.Signature) != ed25519.SignatureSize {
		return nil, errorf(ErrSignature, "checkpoint %d: signature is %d bytes, want %d",
			c.Index, len(sc.Signature), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, sc.Body, sc.Signature) {
		return nil, errorf(ErrSignature, "checkpoint %d signed by key %s does not verify", c.Index, c.KeyID)
	}
	return c, nil
}

// VerifyLink checks that next directly follows prev in the chain: next.Prev ==
// prev.Hash() and next.Index > prev.Index. Errors wrap ErrChain (ErrMalformed for
// a nil checkpoint or an over-long key id).
func VerifyLink(prev, next *Checkpoint) error {
	if prev == nil || next == nil {
		return errorf(ErrMalformed, "nil checkpoint in a chain link")
	}
	if len(prev.KeyID) > KeyIDMax {
		return errorf(ErrMalformed, "checkpoint %d key id is %d bytes, more than %d", prev.Index, len(prev.KeyID), KeyIDMax)
	}
	if next.Index <= prev.Index {
		return errorf(ErrChain, "checkpoint %d cannot follow checkpoint %d: indexes must increase", next.Index, prev.Index)
	}
	if prevHash := prev.Hash(); next.Prev != prevHash {
		return errorf(ErrChain, "checkpoint %d links to %s, but checkpoint %d hashes to %s",
			next.Index, next.Prev, prev.Index, prevHash)
	}
	return nil
}
