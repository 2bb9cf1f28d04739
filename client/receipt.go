package client

import (
	"fmt"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/receipt"
)

// ReceiptFromWire turns an API receipt back into the canonical one (for
// verifiers: only the bytes are used, never the decoded copies).
func ReceiptFromWire(w *tollgatev1.Receipt) (*receipt.Receipt, error) {
	r := &receipt.Receipt{Leaf: w.Leaf, Checkpoint: receipt.SignedCheckpoint{Body: w.Checkpoint, Signature: w.Signature}}
	for i, p := range w.Proof {
		if len(p) != receipt.HashSize {
			return nil, fmt.Errorf("%w: proof[%d] is %d bytes, want %d", receipt.ErrMalformed, i, len(p), receipt.HashSize)
		}
		r.Proof = append(r.Proof, receipt.Hash(p))
	}
	return r, nil
}

// VerifyReceipt checks an API receipt with the cluster's public keys alone
// (see receipt.Verify): only the canonical bytes count, never the decoded
// copies the server adds for people.
func VerifyReceipt(w *tollgatev1.Receipt, keys receipt.KeySet) (*receipt.Leaf, *receipt.Checkpoint, error) {
	if w == nil {
		return nil, nil, fmt.Errorf("%w: no receipt", receipt.ErrMalformed)
	}
	r, err := ReceiptFromWire(w)
	if err != nil {
		return nil, nil, err
	}
	return receipt.Verify(r, keys)
}

// PublicKeys parses the keys of a GetPublicKeys reply. Trusting them is
// trusting the node that answered; an auditor should get the keys out of
// band (tollgate keygen's .pub file, or a copy kept from earlier).
func PublicKeys(resp *tollgatev1.GetPublicKeysResponse) (receipt.KeySet, error) {
	keys := receipt.KeySet{}
	for _, k := range resp.Keys {
		pub, err := receipt.ParsePublicKey([]byte(k.PublicKeyPem))
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k.KeyId, err)
		}
		if id := receipt.KeyID(pub); id != k.KeyId {
			return nil, fmt.Errorf("key %s: its public key has id %s", k.KeyId, id)
		}
		keys[k.KeyId] = pub
	}
	return keys, nil
}
