package receipt_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

// FuzzDecodeLeaf: DecodeLeaf never panics, and whatever it accepts re-encodes to
// the same bytes (one leaf, one encoding).
func FuzzDecodeLeaf(f *testing.F) {
	f.Add(goldenLeafBytes)
	f.Add(goldenWithInputs(0x02, 0x01, 'b', 0x01, '1', 0x01, 'a', 0x01, '1'))
	f.Add(goldenWithInputs(0x81, 0x00))
	for _, leaf := range testDecisions(3) {
		b, _ := leaf.Encode()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		leaf, err := receipt.DecodeLeaf(b)
		if err != nil {
			if leaf != nil || !errors.Is(err, receipt.ErrMalformed) {
				t.Fatalf("DecodeLeaf = %v, %v", leaf, err)
			}
			return
		}
		again, err := leaf.Encode()
		if err != nil {
			t.Fatalf("a decoded leaf does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip changed the bytes:\n%x\n%x", b, again)
		}
		decodedAgain, err := receipt.DecodeLeaf(again)
		if err != nil || !reflect.DeepEqual(decodedAgain, leaf) {
			t.Fatalf("second decode = %+v, %v; want %+v", decodedAgain, err, leaf)
		}
	})
}

// FuzzDecodeCheckpoint: DecodeCheckpoint never panics and accepts only
// canonical bodies.
func FuzzDecodeCheckpoint(f *testing.F) {
	c := sampleCheckpoint()
	f.Add(c.Encode())
	f.Add([]byte("tollgate.checkpoint.v1\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := receipt.DecodeCheckpoint(body)
		if err != nil {
			if c != nil || !errors.Is(err, receipt.ErrMalformed) {
				t.Fatalf("DecodeCheckpoint = %v, %v", c, err)
			}
			return
		}
		if again := c.Encode(); !bytes.Equal(again, body) {
			t.Fatalf("round trip changed the bytes:\n%x\n%x", body, again)
		}
	})
}

// splitProof turns fuzz bytes into proof hashes; a partial last hash is dropped.
func splitProof(b []byte) []receipt.Hash {
	proof := make([]receipt.Hash, len(b)/receipt.HashSize)
	for i := range proof {
		copy(proof[i][:], b[i*receipt.HashSize:])
	}
	return proof
}

func joinProof(proof []receipt.Hash) []byte {
	var b []byte
	for _, h := range proof {
		b = append(b, h[:]...)
	}
	return b
}

// FuzzVerify: Verify never panics, every failure wraps exactly one sentinel, and
// whatever passes is exactly what was signed.
func FuzzVerify(f *testing.F) {
	key := testKey(1)
	keys := receipt.NewKeySet(publicOf(key))
	e := newEntry(f, key, 77, receipt.Hash{}, testDecisions(fiveLeaves))
	for _, r := range e.receipts {
		f.Add(r.Leaf, joinProof(r.Proof), r.Checkpoint.Body, r.Checkpoint.Signature)
	}
	one := newEntry(f, key, 78, e.checkpoint.Hash(), testDecisions(1)).receipts[0]
	f.Add(one.Leaf, []byte(nil), one.Checkpoint.Body, one.Checkpoint.Signature)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, leafBytes, proofBytes, body, signature []byte) {
		r := &receipt.Receipt{
			Leaf:       leafBytes,
			Proof:      splitProof(proofBytes),
			Checkpoint: receipt.SignedCheckpoint{Body: body, Signature: signature},
		}
		leaf, checkpoint, err := receipt.Verify(r, keys)
		if err != nil {
			matched := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					matched++
				}
			}
			if matched != 1 || leaf != nil || checkpoint != nil {
				t.Fatalf("Verify = %v, %v, %q: want nil values and one sentinel", leaf, checkpoint, err)
			}
			return
		}
		if b, _ := leaf.Encode(); !bytes.Equal(b, leafBytes) {
			t.Fatalf("verified leaf re-encodes differently:\n%x\n%x", leafBytes, b)
		}
		if !bytes.Equal(checkpoint.Encode(), body) {
			t.Fatalf("verified checkpoint re-encodes differently")
		}
	})
}
