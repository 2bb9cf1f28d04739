package receipt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
)

// PEM block types, the ones openssl reads and writes for Ed25519 keys.
const (
	privateKeyPEMType = "PRIVATE KEY" // PKCS #8
	publicKeyPEMType  = "PUBLIC KEY"  // PKIX SubjectPublicKeyInfo
	// keyIDBytes is how many bytes of the key's SHA-256 make its id.
	keyIDBytes = 8
)

// KeyID is the first 8 bytes of SHA-256(raw public key) in lowercase hex (16 chars).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:keyIDBytes])
}

// KeySet maps key ids to public keys: the keys a verifier trusts.
type KeySet map[string]ed25519.PublicKey

// NewKeySet returns the set of keys, each under its KeyID.
func NewKeySet(keys ...ed25519.PublicKey) KeySet {
	set := make(KeySet, len(keys))
	for _, pub := range keys {
		set[KeyID(pub)] = pub
	}
	return set
}

// MarshalPrivateKey encodes key as a PKCS #8 "PRIVATE KEY" PEM block, the format of
// `openssl genpkey -algorithm ed25519`.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errorf(ErrMalformed, "private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, errorf(ErrMalformed, "private key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: privateKeyPEMType, Bytes: der}), nil
}

// ParsePrivateKey reads one PKCS #8 "PRIVATE KEY" PEM block holding an Ed25519 key.
func ParsePrivateKey(pemBytes []byte) (ed25519.PrivateKey, error) {
	der, err := onePEMBlock(pemBytes, privateKeyPEMType)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errorf(ErrMalformed, "private key: %v", err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, errorf(ErrMalformed, "private key is a %T, not Ed25519", parsed)
	}
	return key, nil
}

// MarshalPublicKey encodes pub as a PKIX "PUBLIC KEY" PEM block, the format of
// `openssl pkey -pubout`.
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errorf(ErrMalformed, "public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, errorf(ErrMalformed, "public key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: publicKeyPEMType, Bytes: der}), nil
}

// ParsePublicKey reads one PKIX "PUBLIC KEY" PEM block holding an Ed25519 key.
func ParsePublicKey(pemBytes []byte) (ed25519.PublicKey, error) {
	der, err := onePEMBlock(pemBytes, publicKeyPEMType)
	if err != nil {
		return nil, err
	}
	return parsePublicKeyDER(der)
}

// ParsePublicKeys reads one or more concatenated "PUBLIC KEY" PEM blocks. Text
// outside the blocks is ignored, as openssl ignores it, so a key file can say in
// comments from which log index each key signs.
func ParsePublicKeys(pemBytes []byte) (KeySet, error) {
	set := KeySet{}
	rest := pemBytes
	for {
		block, next := pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != publicKeyPEMType {
			return nil, errorf(ErrMalformed, "public key %d: PEM block is %q, want %q", len(set)+1, block.Type, publicKeyPEMType)
		}
		pub, err := parsePublicKeyDER(block.Bytes)
		if err != nil {
			return nil, err
		}
		set[KeyID(pub)] = pub
		rest = next
	}
	// pem.Decode skips a block it cannot parse; refuse rather than drop a key.
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, errorf(ErrMalformed, "public key %d: PEM block does not parse", len(set)+1)
	}
	if len(set) == 0 {
		return nil, errorf(ErrMalformed, "no %q PEM block found", publicKeyPEMType)
	}
	return set, nil
}

func parsePublicKeyDER(der []byte) (ed25519.PublicKey, error) {
	parsed, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, errorf(ErrMalformed, "public key: %v", err)
	}
	pub, ok := parsed.(ed25519.PublicKey)
	if !ok {
		return nil, errorf(ErrMalformed, "public key is a %T, not Ed25519", parsed)
	}
	return pub, nil
}

// onePEMBlock returns the bytes of the only PEM block in pemBytes, which must have
// type blockType.
func onePEMBlock(pemBytes []byte, blockType string) ([]byte, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, errorf(ErrMalformed, "no %q PEM block found", blockType)
	}
	if block.Type != blockType {
		return nil, errorf(ErrMalformed, "PEM block is %q, want %q", block.Type, blockType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errorf(ErrMalformed, "unexpected data after the %q PEM block", blockType)
	}
	return block.Bytes, nil
}
