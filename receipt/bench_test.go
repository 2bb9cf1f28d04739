package receipt_test

import (
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

func BenchmarkSignCheckpoint(b *testing.B) {
	key := testKey(1)
	c := sampleCheckpoint()
	for b.Loop() {
		receipt.Sign(key, &c)
	}
}

// BenchmarkRoot64 is a full batch: 64 decisions in one entry.
func BenchmarkRoot64(b *testing.B) {
	leaves := make([]receipt.Hash, 64)
	for i := range leaves {
		leaves[i] = receipt.LeafHash([]byte{byte(i)})
	}
	for b.Loop() {
		receipt.Root(leaves)
	}
}

func BenchmarkVerify(b *testing.B) {
	key := testKey(1)
	keys := receipt.NewKeySet(publicOf(key))
	r := newEntry(b, key, 77, receipt.Hash{}, testDecisions(64)).receipts[37]
	for b.Loop() {
		if _, _, err := receipt.Verify(r, keys); err != nil {
			b.Fatal(err)
		}
	}
}
