package receipt_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/tollgate/tollgate/receipt"
)

// ExampleVerify is the worked example of docs/receipts.md: a cluster signs one
// log entry holding two decisions, and a verifier checks the receipt of the
// first with nothing but the public key. The printed bytes are test vectors for
// verifiers written in other languages.
func ExampleVerify() {
	// The cluster's signing key. Real keys come from ParsePrivateKey; this one
	// is derived from the seed 00 01 02 ... 1f so the example is reproducible.
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)

	// Log entry 42 (term 3, log time 2026-01-01T00:00:00Z) decided twice.
	const index, timeUnixMs = 42, 1_767_225_600_000
	leaves := []receipt.Leaf{{
		Index: index, Position: 0, TimeUnixMs: timeUnixMs,
		Tenant: "acme", Operation: "budget.consume", Object: "llm-monthly", RequestID: "r-1",
		Inputs:   []receipt.Field{{Name: "amount", Value: "0.0125"}, {Name: "currency", Value: "USD"}},
		Outcome:  "allowed",
		Balances: []receipt.Field{{Name: "remaining", Value: "99.9875"}, {Name: "spent", Value: "0.0125"}},
	}, {
		Index: index, Position: 1, TimeUnixMs: timeUnixMs,
		Tenant: "acme", Operation: "ratelimit.check", Object: "api/user-7", RequestID: "r-2",
		Inputs:  []receipt.Field{{Name: "cost", Value: "1"}},
		Outcome: "denied", Reason: "rate limited",
		Balances: []receipt.Field{{Name: "remaining", Value: "0"}, {Name: "retry_after_ms", Value: "250"}},
	}}
	var encoded [][]byte
	var hashes []receipt.Hash
	for _, leaf := range leaves {
		b, err := leaf.Encode()
		if err != nil {
			panic(err)
		}
		encoded = append(encoded, b)
		hashes = append(hashes, receipt.LeafHash(b))
	}
	checkpoint := receipt.Checkpoint{
		Index: index, Term: 3, TimeUnixMs: timeUnixMs,
		Prev:      receipt.Hash{}, // the first checkpoint of the chain
		Root:      receipt.Root(hashes),
		LeafCount: uint32(len(leaves)),
		KeyID:     receipt.KeyID(pub),
	}
	proof, err := receipt.InclusionProof(hashes, 0)
	if err != nil {
		panic(err)
	}
	r := &receipt.Receipt{
		Leaf:  encoded[0],
		Proof: proof,
		Checkpoint: receipt.SignedCheckpoint{
			Body:      checkpoint.Encode(),
			Signature: receipt.Sign(key, &checkpoint),
		},
	}

	// The verifier's side: the receipt and the public key, nothing else.
	leaf, verified, err := receipt.Verify(r, receipt.NewKeySet(pub))
	if err != nil {
		fmt.Println("rejected:", err)
		return
	}
	fmt.Println("public key:  ", hex.EncodeToString(pub))
	fmt.Println("key id:      ", verified.KeyID)
	fmt.Println("leaf 0:      ", hex.EncodeToString(r.Leaf))
	fmt.Println("leaf 0 hash: ", hashes[0])
	fmt.Println("leaf 1 hash: ", hashes[1])
	fmt.Println("proof:       ", r.Proof)
	fmt.Println("root:        ", verified.Root)
	fmt.Println("body:        ", hex.EncodeToString(r.Checkpoint.Body))
	fmt.Println("signature:   ", hex.EncodeToString(r.Checkpoint.Signature))
	fmt.Println("chain hash:  ", verified.Hash())
	fmt.Printf("verified: entry %d, %s %s %s %s\n", verified.Index, leaf.Tenant, leaf.Operation, leaf.Object, leaf.Outcome)

	// One changed byte, and the receipt no longer verifies.
	r.Leaf[len(r.Leaf)-2] ^= 0x01
	_, _, err = receipt.Verify(r, receipt.NewKeySet(pub))
	fmt.Println(err)
	// Output:
	// public key:   03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8
	// key id:       56475aa75463474c
	// leaf 0:       01000000000000002a000000000000019b76daa8000461636d650e6275646765742e636f6e73756d650b6c6c6d2d6d6f6e74686c7903722d310206616d6f756e7406302e303132350863757272656e63790355534407616c6c6f77656400020972656d61696e696e670739392e39383735057370656e7406302e30313235
	// leaf 0 hash:  0f10e5de6dd1ab144f1aaef0b0bd0dfd86b7f78c8869c07cd9188b57f7aa3bfb
	// leaf 1 hash:  f8886fa0ae434ce5ae574339c9cb5a7c30081448bbb12a1bde98032e57dc80ba
	// proof:        [f8886fa0ae434ce5ae574339c9cb5a7c30081448bbb12a1bde98032e57dc80ba]
	// root:         10106ba9e1e68cda3a7a65c7386760bff20984a5e3c3b3e0484c94740e5bcc21
	// body:         746f6c6c676174652e636865636b706f696e742e76310a000000000000002a00000000000000030000019b76daa800000000000000000000000000000000000000000000000000000000000000000010106ba9e1e68cda3a7a65c7386760bff20984a5e3c3b3e0484c94740e5bcc21000000021035363437356161373534363334373463
	// signature:    25941407f1107b8df7d583f1c7f87514ef662c4274c936c98b479a1bad8d2edb9f5a24f87bc11de851bddd6c6f99f9774b3cecb8cfa85b1fee18bd5c090fe40e
	// chain hash:   f392a3c6e22ab2d2372e8503b8279c2cc89c9394c092d8d1cab06e5ffb2c1985
	// verified: entry 42, acme budget.consume llm-monthly allowed
	// receipt: bad inclusion proof: leaf 0 of 2 leads to root a91bd9b37db628b1044e1907ccdff9468967ccd0b4396b65b1d67e320039967f, not 10106ba9e1e68cda3a7a65c7386760bff20984a5e3c3b3e0484c94740e5bcc21
}
