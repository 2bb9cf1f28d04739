package receipt_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

func sampleCheckpoint() receipt.Checkpoint {
	return receipt.Checkpoint{
		Index:      42,
		Term:       3,
		TimeUnixMs: baseTimeUnixMs,
		Prev:       receipt.LeafHash([]byte("prev")),
		Root:       receipt.LeafHash([]byte("root")),
		LeafCount:  5,
		KeyID:      receipt.KeyID(publicOf(testKey(1))),
	}
}

func TestCheckpointEncodingIsTheSpecifiedLayout(t *testing.T) {
	c := sampleCheckpoint()
	c.TimeUnixMs = -1
	b := c.Encode()
	const domain = "tollgate.checkpoint.v1\n"
	if want := len(domain) + 8 + 8 + 8 + 32 + 32 + 4 + 1 + 16; len(b) != want {
		t.Fatalf("body is %d bytes, want %d", len(b), want)
	}
	if string(b[:23]) != domain {
		t.Fatalf("body starts %q", b[:23])
	}
	f := b[23:]
	checks := []struct {
		name      string
		got, want []byte
	}{
		{"Index", f[0:8], binary.BigEndian.AppendUint64(nil, 42)},
		{"Term", f[8:16], binary.BigEndian.AppendUint64(nil, 3)},
		{"TimeUnixMs", f[16:24], bytes.Repeat([]byte{0xff}, 8)},
		{"Prev", f[24:56], c.Prev[:]},
		{"Root", f[56:88], c.Root[:]},
		{"LeafCount", f[88:92], []byte{0, 0, 0, 5}},
		{"KeyID length", f[92:93], []byte{16}},
		{"KeyID", f[93:], []byte(c.KeyID)},
	}
	for _, check := range checks {
		if !bytes.Equal(check.got, check.want) {
			t.Errorf("%s = %x, want %x", check.name, check.got, check.want)
		}
	}
	hash := c.Hash()
	if want := sha256.Sum256(append([]byte{0x02}, b...)); hash != want {
		t.Errorf("Hash = %s, want SHA-256(0x02 || body) = %x", hash, want)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	extremes := receipt.Checkpoint{
		Index: math.MaxUint64, Term: math.MaxUint64, TimeUnixMs: math.MinInt64,
		LeafCount: math.MaxUint32, KeyID: strings.Repeat("k", receipt.KeyIDMax),
	}
	for i, c := range []receipt.Checkpoint{sampleCheckpoint(), extremes, {LeafCount: 1, KeyID: "x"}} {
		got, err := receipt.DecodeCheckpoint(c.Encode())
		if err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		if *got != c {
			t.Fatalf("checkpoint %d: decoded %+v, want %+v", i, *got, c)
		}
	}
}

func TestDecodeCheckpointIsStrict(t *testing.T) {
	sample := sampleCheckpoint()
	body := sample.Encode()
	keyIDLenAt := len(body) - 17
	withByte := func(at int, v byte) []byte {
		b := bytes.Clone(body)
		b[at] = v
		return b
	}
	noLeaves := sampleCheckpoint()
	noLeaves.LeafCount = 0
	cases := map[string][]byte{
		"empty":            nil,
		"other domain":     append([]byte("tollgate.checkpoint.v2\n"), body[23:]...),
		"trailing byte":    append(bytes.Clone(body), 'x'),
		"key id too short": withByte(keyIDLenAt, 15),
		"key id too long":  withByte(keyIDLenAt, 17),
		"empty key id":     withByte(keyIDLenAt, 0)[:keyIDLenAt+1],
		"key id over max":  append(withByte(keyIDLenAt, 65)[:keyIDLenAt+1], bytes.Repeat([]byte{'k'}, 65)...),
		"zero leaves":      noLeaves.Encode(),
	}
	for i := range body {
		cases[fmt.Sprintf("truncated to %d bytes", i)] = body[:i]
	}
	for name, b := range cases {
		c, err := receipt.DecodeCheckpoint(b)
		if c != nil {
			t.Errorf("%s: DecodeCheckpoint returned a checkpoint with its error", name)
		}
		wantSentinel(t, err, receipt.ErrMalformed, name)
	}
}

func TestSigningIsDeterministic(t *testing.T) {
	key := testKey(1)
	c := sampleCheckpoint()
	first := receipt.Sign(key, &c)
	copied := c
	second := receipt.Sign(key, &copied)
	if !bytes.Equal(first, second) {
		t.Fatalf("two signatures of one checkpoint differ:\n%x\n%x", first, second)
	}
	if len(first) != ed25519.SignatureSize || !ed25519.Verify(publicOf(key), c.Encode(), first) {
		t.Fatal("Sign does not produce an Ed25519 signature of the body")
	}
	c.Term++
	if bytes.Equal(receipt.Sign(key, &c), first) {
		t.Fatal("a different checkpoint got the same signature")
	}
}

func TestVerifyCheckpoint(t *testing.T) {
	key := testKey(1)
	c := sampleCheckpoint()
	signed := receipt.SignedCheckpoint{Body: c.Encode(), Signature: receipt.Sign(key, &c)}
	got, err := receipt.VerifyCheckpoint(signed, receipt.NewKeySet(publicOf(testKey(9)), publicOf(key)))
	if err != nil || *got != c {
		t.Fatalf("VerifyCheckpoint = %+v, %v", got, err)
	}
	// A key listed under the checkpoint's id must be the key with that id.
	impostor := receipt.KeySet{c.KeyID: publicOf(testKey(2))}
	_, err = receipt.VerifyCheckpoint(signed, impostor)
	wantSentinel(t, err, receipt.ErrUnknownKey, "key under another key's id")
	short := receipt.KeySet{c.KeyID: publicOf(key)[:31]}
	_, err = receipt.VerifyCheckpoint(signed, short)
	wantSentinel(t, err, receipt.ErrUnknownKey, "31-byte key")
	_, err = receipt.VerifyCheckpoint(signed, nil)
	wantSentinel(t, err, receipt.ErrUnknownKey, "nil key set")
	// Another key signing a body that names the real key is a forgery.
	forged := receipt.SignedCheckpoint{Body: signed.Body, Signature: receipt.Sign(testKey(2), &c)}
	_, err = receipt.VerifyCheckpoint(forged, receipt.NewKeySet(publicOf(key)))
	wantSentinel(t, err, receipt.ErrSignature, "signature by another key")
}

func TestEncodePanicsOnOverlongKeyID(t *testing.T) {
	c := sampleCheckpoint()
	c.KeyID = strings.Repeat("k", receipt.KeyIDMax+1)
	defer func() {
		if recover() == nil {
			t.Fatal("Encode of a 65-byte key id did not panic")
		}
	}()
	c.Encode()
}

// chain returns n signed checkpoints, each linked to the one before.
func chain(t *testing.T, n int) []receipt.Checkpoint {
	t.Helper()
	key := testKey(1)
	var prev receipt.Hash
	checkpoints := make([]receipt.Checkpoint, n)
	for i := range checkpoints {
		// Indexes skip: entries without decisions (elections, config) have no checkpoint.
		e := newEntry(t, key, uint64(10+3*i), prev, testDecisions(1+i%4))
		checkpoints[i] = e.checkpoint
		prev = e.checkpoint.Hash()
	}
	return checkpoints
}

// verifyChain returns the first broken link's error.
func verifyChain(checkpoints []receipt.Checkpoint) error {
	for i := 1; i < len(checkpoints); i++ {
		if err := receipt.VerifyLink(&checkpoints[i-1], &checkpoints[i]); err != nil {
			return err
		}
	}
	return nil
}

func TestChainOfTenLinks(t *testing.T) {
	good := chain(t, 10)
	if good[0].Prev != (receipt.Hash{}) {
		t.Fatal("first checkpoint must link to the zero hash")
	}
	if err := verifyChain(good); err != nil {
		t.Fatal(err)
	}
	for removed := 1; removed < len(good)-1; removed++ {
		gap := append(append([]receipt.Checkpoint(nil), good[:removed]...), good[removed+1:]...)
		wantSentinel(t, verifyChain(gap), receipt.ErrChain, fmt.Sprintf("checkpoint %d removed", removed))
	}
	edits := map[string]func(*receipt.Checkpoint){
		"index":      func(c *receipt.Checkpoint) { c.Index++ },
		"term":       func(c *receipt.Checkpoint) { c.Term++ },
		"time":       func(c *receipt.Checkpoint) { c.TimeUnixMs-- },
		"prev":       func(c *receipt.Checkpoint) { c.Prev[31] ^= 1 },
		"root":       func(c *receipt.Checkpoint) { c.Root[0] ^= 1 },
		"leaf count": func(c *receipt.Checkpoint) { c.LeafCount++ },
		"key id":     func(c *receipt.Checkpoint) { c.KeyID = "0000000000000000" },
	}
	for name, edit := range edits {
		for edited := 0; edited < len(good); edited++ {
			damaged := append([]receipt.Checkpoint(nil), good...)
			edit(&damaged[edited])
			err := verifyChain(damaged)
			if edited == len(good)-1 && name != "prev" {
				// The newest checkpoint has no successor to vouch for it yet; its
				// signature protects it until the next link does.
				if err != nil {
					t.Errorf("edit of %s in the newest checkpoint: %v", name, err)
				}
				continue
			}
			wantSentinel(t, err, receipt.ErrChain, fmt.Sprintf("%s of checkpoint %d edited", name, edited))
		}
	}
	swapped := append([]receipt.Checkpoint(nil), good...)
	swapped[3], swapped[4] = swapped[4], swapped[3]
	wantSentinel(t, verifyChain(swapped), receipt.ErrChain, "two checkpoints swapped")
	wantSentinel(t, receipt.VerifyLink(&good[2], &good[2]), receipt.ErrChain, "a checkpoint following itself")
	// Linked by hash is not enough: the index must also go up.
	for _, index := range []uint64{good[2].Index, good[2].Index - 1} {
		next := good[3]
		next.Index = index
		wantSentinel(t, receipt.VerifyLink(&good[2], &next), receipt.ErrChain, fmt.Sprintf("linked successor with index %d", index))
	}
	wantSentinel(t, receipt.VerifyLink(nil, &good[0]), receipt.ErrMalformed, "nil prev")
	long := good[0]
	long.KeyID = strings.Repeat("k", receipt.KeyIDMax+1)
	wantSentinel(t, receipt.VerifyLink(&long, &good[1]), receipt.ErrMalformed, "over-long key id")
}
