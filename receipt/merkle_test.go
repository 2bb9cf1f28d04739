package receipt_test

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"slices"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

// The reference tree below is written straight from RFC 9162 §2.1.1 and §2.1.3.1
// over raw leaf data, with its own hashing and a linear split search, so that it
// shares no code with the package.

func refHash(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// refSplit is the largest power of two smaller than n.
func refSplit(n int) int {
	k := 1
	for k*2 < n {
		k *= 2
	}
	return k
}

// refMTH is MTH(D[n]).
func refMTH(data [][]byte) []byte {
	switch n := len(data); n {
	case 0:
		return refHash()
	case 1:
		return refHash([]byte{0x00}, data[0])
	default:
		k := refSplit(n)
		return refHash([]byte{0x01}, refMTH(data[:k]), refMTH(data[k:]))
	}
}

// refPath is PATH(m, D[n]).
func refPath(m int, data [][]byte) [][]byte {
	n := len(data)
	if n <= 1 {
		return nil
	}
	k := refSplit(n)
	if m < k {
		return append(refPath(m, data[:k]), refMTH(data[k:]))
	}
	return append(refPath(m-k, data[k:]), refMTH(data[:k]))
}

func mustHash(t testing.TB, s string) receipt.Hash {
	t.Helper()
	h, err := receipt.ParseHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func leafHashes(data [][]byte) []receipt.Hash {
	hashes := make([]receipt.Hash, len(data))
	for i, d := range data {
		hashes[i] = receipt.LeafHash(d)
	}
	return hashes
}

func TestRootOfEmptyTreeIsSHA256OfNothing(t *testing.T) {
	const want = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := receipt.Root(nil).String(); got != want {
		t.Fatalf("Root(nil) = %s, want %s", got, want)
	}
}

// The Certificate Transparency reference leaves, tree heads and audit paths
// (RFC 6962 test data; RFC 9162 keeps the same tree hash).
var ctLeaves = []string{"", "00", "10", "2021", "3031", "40414243",
	"5051525354555657", "606162636465666768696a6b6c6d6e6f"}

var ctRoots = []string{
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

func TestRootAndProofMatchCertificateTransparencyVectors(t *testing.T) {
	data := make([][]byte, len(ctLeaves))
	for i, s := range ctLeaves {
		data[i], _ = hex.DecodeString(s)
	}
	hashes := leafHashes(data)
	for n := 1; n <= len(hashes); n++ {
		if got := receipt.Root(hashes[:n]).String(); got != ctRoots[n-1] {
			t.Errorf("root of the first %d CT leaves = %s, want %s", n, got, ctRoots[n-1])
		}
	}
	paths := []struct {
		index int
		proof []string
	}{
		{0, []string{
			"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
		}},
		{5, []string{
			"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
			"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		}},
	}
	for _, p := range paths {
		proof, err := receipt.InclusionProof(hashes, p.index)
		if err != nil {
			t.Fatal(err)
		}
		var want []receipt.Hash
		for _, s := range p.proof {
			want = append(want, mustHash(t, s))
		}
		if !slices.Equal(proof, want) {
			t.Errorf("proof for CT leaf %d of 8 = %v, want %v", p.index, proof, want)
		}
		if err := receipt.VerifyInclusion(hashes[p.index], uint64(p.index), 8, want, mustHash(t, ctRoots[7])); err != nil {
			t.Errorf("CT proof for leaf %d does not verify: %v", p.index, err)
		}
	}
}

// TestRootOfSevenSingleByteLeaves pins a tree of our own: leaves
// LeafHash([]byte{i}) for i = 0..6. The value was checked against refMTH.
func TestRootOfSevenSingleByteLeaves(t *testing.T) {
	const want = "3560191803028444b232018ac047fdb561c09c23a7a6876c85e08b5e4d48e9f3"
	data := make([][]byte, 7)
	for i := range data {
		data[i] = []byte{byte(i)}
	}
	if ref := hex.EncodeToString(refMTH(data)); ref != want {
		t.Fatalf("reference root = %s, want %s", ref, want)
	}
	if got := receipt.Root(leafHashes(data)).String(); got != want {
		t.Fatalf("Root = %s, want %s", got, want)
	}
}

// TestInclusionEveryLeafOfEverySize checks every (size, index) up to 70 leaves
// against the reference, and that a proof only verifies for its own leaf,
// position and root.
func TestInclusionEveryLeafOfEverySize(t *testing.T) {
	const sizeMax = 70
	data := make([][]byte, sizeMax+1) // the last leaf is in no tested tree but one root
	for i := range data {
		data[i] = []byte{byte(i), byte(i * 7)}
	}
	all := leafHashes(data)
	for size := 1; size <= sizeMax; size++ {
		hashes := all[:size]
		root := receipt.Root(hashes)
		if want := refMTH(data[:size]); string(root[:]) != string(want) {
			t.Fatalf("size %d: Root = %s, reference %x", size, root, want)
		}
		otherRoot := receipt.Root(all[:size+1]) // differs from root: one more leaf
		for i := range size {
			proof, err := receipt.InclusionProof(hashes, i)
			if err != nil {
				t.Fatalf("size %d leaf %d: %v", size, i, err)
			}
			checkProofAgainstReference(t, proof, refPath(i, data[:size]), size, i)
			n, idx := uint64(size), uint64(i)
			if err := receipt.VerifyInclusion(hashes[i], idx, n, proof, root); err != nil {
				t.Fatalf("size %d leaf %d: %v", size, i, err)
			}
			wantProofError(t, receipt.VerifyInclusion(hashes[i], idx, n, proof, otherRoot), size, i, "other root")
			wantProofError(t, receipt.VerifyInclusion(all[sizeMax], idx, n, proof, root), size, i, "foreign leaf")
			wantProofError(t, receipt.VerifyInclusion(hashes[i], n, n, proof, root), size, i, "index == size")
			if size > 1 {
				wantProofError(t, receipt.VerifyInclusion(hashes[i], uint64((i+1)%size), n, proof, root), size, i, "other index")
				wantProofError(t, receipt.VerifyInclusion(hashes[(i+1)%size], idx, n, proof, root), size, i, "neighbour leaf")
				wantProofError(t, receipt.VerifyInclusion(hashes[i], idx, n, proof[:len(proof)-1], root), size, i, "short proof")
			}
			wantProofError(t, receipt.VerifyInclusion(hashes[i], idx, n, append(slices.Clone(proof), root), root), size, i, "long proof")
			for j := range proof {
				bad := slices.Clone(proof)
				bad[j][0] ^= 0x01
				wantProofError(t, receipt.VerifyInclusion(hashes[i], idx, n, bad, root), size, i, "edited proof")
			}
		}
	}
}

func checkProofAgainstReference(t *testing.T, proof []receipt.Hash, ref [][]byte, size, i int) {
	t.Helper()
	if len(proof) != len(ref) {
		t.Fatalf("size %d leaf %d: proof has %d hashes, reference %d", size, i, len(proof), len(ref))
	}
	for j := range proof {
		if string(proof[j][:]) != string(ref[j]) {
			t.Fatalf("size %d leaf %d: proof[%d] = %s, reference %x", size, i, j, proof[j], ref[j])
		}
	}
}

func wantProofError(t *testing.T, err error, size, i int, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("size %d leaf %d: %s verified", size, i, what)
	}
	wantSentinel(t, err, receipt.ErrProof, what)
}

func TestSingleLeafTreeHasEmptyProof(t *testing.T) {
	leaf := receipt.LeafHash([]byte("only"))
	if root := receipt.Root([]receipt.Hash{leaf}); root != leaf {
		t.Fatalf("root of one leaf = %s, want the leaf hash %s", root, leaf)
	}
	proof, err := receipt.InclusionProof([]receipt.Hash{leaf}, 0)
	if err != nil || len(proof) != 0 {
		t.Fatalf("InclusionProof = %v, %v; want an empty proof", proof, err)
	}
	if err := receipt.VerifyInclusion(leaf, 0, 1, nil, leaf); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyInclusionRejectsSubtreeRoots: a proof that stops below the top of the
// tree must fail even when it reaches the root, or an interior node (or the root
// itself) could pose as a leaf.
func TestVerifyInclusionRejectsSubtreeRoots(t *testing.T) {
	hashes := leafHashes([][]byte{{0}, {1}, {2}, {3}})
	root := receipt.Root(hashes)
	left, right := receipt.NodeHash(hashes[0], hashes[1]), receipt.NodeHash(hashes[2], hashes[3])
	if receipt.NodeHash(left, right) != root {
		t.Fatal("test tree is not what it seems")
	}
	err := receipt.VerifyInclusion(left, 0, 4, []receipt.Hash{right}, root)
	wantSentinel(t, err, receipt.ErrProof, "interior node as leaf 0 of 4")
	err = receipt.VerifyInclusion(root, 0, 4, nil, root)
	wantSentinel(t, err, receipt.ErrProof, "root as leaf 0 of 4")
}

func TestInclusionProofRejectsOutOfRangeLeaf(t *testing.T) {
	hashes := leafHashes([][]byte{{1}, {2}, {3}})
	for _, i := range []int{-1, 3, math.MaxInt} {
		_, err := receipt.InclusionProof(hashes, i)
		wantSentinel(t, err, receipt.ErrProof, "InclusionProof out of range")
	}
	_, err := receipt.InclusionProof(nil, 0)
	wantSentinel(t, err, receipt.ErrProof, "InclusionProof of an empty tree")
}

func TestVerifyInclusionRejectsImpossibleSizes(t *testing.T) {
	leaf := receipt.LeafHash([]byte("x"))
	wantSentinel(t, receipt.VerifyInclusion(leaf, 0, 0, nil, receipt.Root(nil)), receipt.ErrProof, "size 0")
	// A huge tree needs 64 proof hashes; a shorter proof must fail, not loop.
	err := receipt.VerifyInclusion(leaf, math.MaxUint64-1, math.MaxUint64, []receipt.Hash{leaf}, leaf)
	wantSentinel(t, err, receipt.ErrProof, "huge size")
	many := make([]receipt.Hash, 1000)
	wantSentinel(t, receipt.VerifyInclusion(leaf, 1, 2, many, leaf), receipt.ErrProof, "1000-hash proof")
}

func TestHashStringAndParse(t *testing.T) {
	h := receipt.LeafHash([]byte("x"))
	s := h.String()
	if len(s) != 64 || s != hex.EncodeToString(h[:]) {
		t.Fatalf("String() = %q", s)
	}
	if got, err := receipt.ParseHash(s); err != nil || got != h {
		t.Fatalf("ParseHash(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"", s[:62], s + "00", "zz" + s[2:], " " + s[1:]} {
		_, err := receipt.ParseHash(bad)
		wantSentinel(t, err, receipt.ErrMalformed, "ParseHash("+bad+")")
	}
}

func TestHashesAreDomainSeparated(t *testing.T) {
	a, b := receipt.LeafHash([]byte("a")), receipt.LeafHash([]byte("b"))
	if got, want := receipt.LeafHash([]byte("a")), receipt.Hash(sha256.Sum256([]byte("\x00a"))); got != want {
		t.Fatalf("LeafHash = %s, want SHA-256(0x00 || data) = %s", got, want)
	}
	node := receipt.NodeHash(a, b)
	if want := receipt.Hash(sha256.Sum256(append(append([]byte{0x01}, a[:]...), b[:]...))); node != want {
		t.Fatalf("NodeHash = %s, want %s", node, want)
	}
	// A leaf whose data is an interior node's input does not hash to that node.
	if fake := receipt.LeafHash(append(a[:], b[:]...)); fake == node {
		t.Fatal("a leaf collides with an interior node")
	}
}
