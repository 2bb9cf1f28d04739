package receipt_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

// The Ed25519 key pair of RFC 8410 §10.3 and §10.1, as openssl writes them.
const (
	rfc8410PrivateKey = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
`
	rfc8410PublicKey = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----
`
)

func TestKeyID(t *testing.T) {
	pub := publicOf(testKey(1))
	sum := sha256.Sum256(pub)
	if got, want := receipt.KeyID(pub), hex.EncodeToString(sum[:8]); got != want || len(got) != 16 {
		t.Fatalf("KeyID = %q, want %q", got, want)
	}
	set := receipt.NewKeySet(pub, publicOf(testKey(2)), pub)
	if len(set) != 2 || !bytes.Equal(set[receipt.KeyID(pub)], pub) {
		t.Fatalf("NewKeySet = %v", set)
	}
}

func TestOpenSSLKeysParse(t *testing.T) {
	key, err := receipt.ParsePrivateKey([]byte(rfc8410PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := receipt.ParsePublicKey([]byte(rfc8410PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(publicOf(key), pub) {
		t.Fatal("the RFC 8410 private key does not match its public key")
	}
	// Our encoding is openssl's: same key, same PEM text.
	if b, err := receipt.MarshalPrivateKey(key); err != nil || string(b) != rfc8410PrivateKey {
		t.Fatalf("MarshalPrivateKey = %s, %v", b, err)
	}
	if b, err := receipt.MarshalPublicKey(pub); err != nil || string(b) != rfc8410PublicKey {
		t.Fatalf("MarshalPublicKey = %s, %v", b, err)
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	key := testKey(7)
	privatePEM, err := receipt.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(privatePEM); block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("private key PEM:\n%s", privatePEM)
	}
	parsed, err := receipt.ParsePrivateKey(privatePEM)
	if err != nil || !key.Equal(parsed) {
		t.Fatalf("ParsePrivateKey = %x, %v", parsed, err)
	}
	publicPEM, err := receipt.MarshalPublicKey(publicOf(key))
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(publicPEM); block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("public key PEM:\n%s", publicPEM)
	}
	pub, err := receipt.ParsePublicKey(publicPEM)
	if err != nil || !publicOf(key).Equal(pub) {
		t.Fatalf("ParsePublicKey = %x, %v", pub, err)
	}
}

func TestParsePublicKeysReadsAKeyFile(t *testing.T) {
	old, current := publicOf(testKey(1)), publicOf(testKey(2))
	oldPEM, _ := receipt.MarshalPublicKey(old)
	currentPEM, _ := receipt.MarshalPublicKey(current)
	file := "# key " + receipt.KeyID(old) + " signs from index 1\n" + string(oldPEM) +
		"\n# key " + receipt.KeyID(current) + " signs from index 5000\n" + string(currentPEM)
	set, err := receipt.ParsePublicKeys([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	want := receipt.NewKeySet(old, current)
	if len(set) != 2 || !old.Equal(set[receipt.KeyID(old)]) || !current.Equal(set[receipt.KeyID(current)]) {
		t.Fatalf("ParsePublicKeys = %v, want %v", set, want)
	}
}

func ecdsaPEM(t *testing.T) (privatePEM, publicPEM []byte) {
	t.Helper()
	// A fixed scalar keeps the test deterministic; any P-256 key will do.
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{0x11}, 32))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
}

func TestKeyParsersRejectOtherInput(t *testing.T) {
	ecPrivate, ecPublic := ecdsaPEM(t)
	corrupt := []byte("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
	privateCases := map[string]string{
		"empty":           "",
		"not PEM":         "hello",
		"public key":      rfc8410PublicKey,
		"ECDSA key":       string(ecPrivate),
		"two keys":        rfc8410PrivateKey + rfc8410PrivateKey,
		"encrypted block": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
		"bad DER":         "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	}
	for name, in := range privateCases {
		_, err := receipt.ParsePrivateKey([]byte(in))
		wantSentinel(t, err, receipt.ErrMalformed, "ParsePrivateKey "+name)
	}
	publicCases := map[string]string{
		"empty":         "",
		"private key":   rfc8410PrivateKey,
		"ECDSA key":     string(ecPublic),
		"bad DER":       "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
		"corrupt block": string(corrupt),
	}
	for name, in := range publicCases {
		_, err := receipt.ParsePublicKey([]byte(in))
		wantSentinel(t, err, receipt.ErrMalformed, "ParsePublicKey "+name)
		_, err = receipt.ParsePublicKeys([]byte(in))
		wantSentinel(t, err, receipt.ErrMalformed, "ParsePublicKeys "+name)
	}
	// A bad second block must not silently leave a one-key set.
	_, err := receipt.ParsePublicKeys(append([]byte(rfc8410PublicKey), corrupt...))
	wantSentinel(t, err, receipt.ErrMalformed, "ParsePublicKeys with a corrupt second block")
	_, err = receipt.ParsePublicKeys([]byte(rfc8410PublicKey + string(ecPublic)))
	wantSentinel(t, err, receipt.ErrMalformed, "ParsePublicKeys with an ECDSA second key")
	_, err = receipt.ParsePublicKey([]byte(rfc8410PublicKey + rfc8410PublicKey))
	wantSentinel(t, err, receipt.ErrMalformed, "ParsePublicKey with two keys")

	_, err = receipt.MarshalPrivateKey(ed25519.PrivateKey{1, 2, 3})
	wantSentinel(t, err, receipt.ErrMalformed, "MarshalPrivateKey of 3 bytes")
	_, err = receipt.MarshalPublicKey(nil)
	wantSentinel(t, err, receipt.ErrMalformed, "MarshalPublicKey of nil")
}
