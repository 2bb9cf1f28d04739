package receipt_test

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/receipt"
)

// goldenLeaf and goldenLeafBytes pin the encoding byte by byte, as written in
// docs/receipts.md.
var goldenLeaf = receipt.Leaf{
	Index:      0x0102030405060708,
	Position:   9,
	TimeUnixMs: -2,
	Tenant:     "ab",
	Operation:  "op",
	RequestID:  "r",
	Inputs:     []receipt.Field{{Name: "a", Value: "1"}},
	Outcome:    "ok",
}

var goldenLeafBytes = []byte{
	0x01,                                           // version
	0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // Index
	0x00, 0x00, 0x00, 0x09, // Position
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, // TimeUnixMs -2
	0x02, 'a', 'b', // Tenant
	0x02, 'o', 'p', // Operation
	0x00,      // Object ""
	0x01, 'r', // RequestID
	0x01, 0x01, 'a', 0x01, '1', // Inputs: 1 field a=1
	0x02, 'o', 'k', // Outcome
	0x00, // Reason ""
	0x00, // Balances: 0 fields
}

func TestLeafEncodingIsTheSpecifiedBytes(t *testing.T) {
	got, err := goldenLeaf.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, goldenLeafBytes) {
		t.Fatalf("Encode =\n%x\nwant\n%x", got, goldenLeafBytes)
	}
	// Lengths from 128 bytes on take a two-byte varint, low 7 bits first.
	long := goldenLeaf
	long.Reason = strings.Repeat("x", 200)
	got, err = long.Encode()
	if err != nil {
		t.Fatal(err)
	}
	reasonAt := len(goldenLeafBytes) - 2
	if !bytes.Equal(got[reasonAt:reasonAt+2], []byte{0xc8, 0x01}) {
		t.Fatalf("200-byte reason length encodes as %x, want c801", got[reasonAt:reasonAt+2])
	}
}

func TestLeafRoundTrip(t *testing.T) {
	maxString := strings.Repeat("é", receipt.LeafStringMax/len("é")) // exactly the maximum bytes
	manyFields := make([]receipt.Field, receipt.LeafFieldsMax)
	for i := range manyFields {
		manyFields[i] = receipt.Field{Name: fmt.Sprintf("f%02d", i), Value: maxString}
	}
	leaves := []receipt.Leaf{
		{},
		goldenLeaf,
		testDecisions(1)[0],
		{
			Index: math.MaxUint64, Position: math.MaxUint32, TimeUnixMs: math.MinInt64,
			Tenant: maxString, Operation: "ratelimit.check", Object: "policy-1/user:42",
			RequestID: "日本語", Inputs: manyFields, Outcome: "denied", Reason: "rate limited",
			Balances: manyFields,
		},
		{TimeUnixMs: math.MaxInt64, Balances: []receipt.Field{{Name: "remaining", Value: ""}}},
	}
	for i, leaf := range leaves {
		b, err := leaf.Encode()
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		got, err := receipt.DecodeLeaf(b)
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		if !reflect.DeepEqual(*got, leaf) {
			t.Fatalf("leaf %d: decoded %+v, want %+v", i, *got, leaf)
		}
		again, err := got.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("leaf %d: re-encoding differs: %v", i, err)
		}
	}
}

func TestLeafEncodeRejectsNonCanonicalLeaves(t *testing.T) {
	tooLong := strings.Repeat("x", receipt.LeafStringMax+1)
	tooMany := make([]receipt.Field, receipt.LeafFieldsMax+1)
	for i := range tooMany {
		tooMany[i].Name = fmt.Sprintf("f%02d", i)
	}
	badFieldLists := map[string][]receipt.Field{
		"unsorted":          {{Name: "b"}, {Name: "a"}},
		"duplicate":         {{Name: "a", Value: "1"}, {Name: "a", Value: "2"}},
		"empty name":        {{Name: "", Value: "1"}},
		"long name":         {{Name: tooLong}},
		"long value":        {{Name: "a", Value: tooLong}},
		"non-UTF-8 value":   {{Name: "a", Value: "\xff"}},
		"too many fields":   tooMany,
		"non-UTF-8 name":    {{Name: "\xc3"}},
		"not in byte order": {{Name: "a"}, {Name: "B"}}, // "B" < "a": no case folding
	}
	cases := map[string]receipt.Leaf{}
	for name, fields := range badFieldLists {
		cases["inputs "+name] = receipt.Leaf{Inputs: fields}
		cases["balances "+name] = receipt.Leaf{Balances: fields}
	}
	cases["long tenant"] = receipt.Leaf{Tenant: tooLong}
	cases["long reason"] = receipt.Leaf{Reason: tooLong}
	cases["non-UTF-8 object"] = receipt.Leaf{Object: "a\x80"}
	for name, leaf := range cases {
		b, err := leaf.Encode()
		if b != nil {
			t.Errorf("%s: Encode returned bytes with its error", name)
		}
		wantSentinel(t, err, receipt.ErrMalformed, name)
	}
	var nilLeaf *receipt.Leaf
	_, err := nilLeaf.Encode()
	wantSentinel(t, err, receipt.ErrMalformed, "nil leaf")
}

// inputsAt is the offset of the golden leaf's Inputs: header, Tenant, Operation,
// Object, RequestID.
const inputsAt = 21 + 3 + 3 + 1 + 2

// goldenWithInputs returns the golden leaf with its Inputs replaced by raw bytes.
func goldenWithInputs(inputs ...byte) []byte {
	b := append([]byte(nil), goldenLeafBytes[:inputsAt]...)
	b = append(b, inputs...)
	return append(b, 0x02, 'o', 'k', 0x00, 0x00) // Outcome, Reason, Balances
}

func TestDecodeLeafRejectsEverythingEncodeWouldNotProduce(t *testing.T) {
	if _, err := receipt.DecodeLeaf(goldenWithInputs(0x01, 0x01, 'a', 0x01, '1')); err != nil {
		t.Fatalf("the test's own construction does not decode: %v", err)
	}
	nonMinimalTenant := append([]byte(nil), goldenLeafBytes[:21]...)
	nonMinimalTenant = append(nonMinimalTenant, 0x82, 0x00) // 2, padded to two bytes
	nonMinimalTenant = append(nonMinimalTenant, goldenLeafBytes[22:]...)
	longString := append([]byte{0x01, 0x01, 'a', 0x81, 0x20}, bytes.Repeat([]byte{'x'}, receipt.LeafStringMax+1)...)

	cases := map[string][]byte{
		"empty":                nil,
		"header only":          goldenLeafBytes[:21],
		"unknown version":      append([]byte{0x02}, goldenLeafBytes[1:]...),
		"trailing byte":        append(bytes.Clone(goldenLeafBytes), 0x00),
		"non-minimal length":   nonMinimalTenant,
		"non-minimal count":    goldenWithInputs(0x81, 0x00, 0x01, 'a', 0x01, '1'),
		"non-minimal zero":     goldenWithInputs(0x80, 0x00),
		"overflowing varint":   goldenWithInputs(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"unsorted fields":      goldenWithInputs(0x02, 0x01, 'b', 0x01, '1', 0x01, 'a', 0x01, '1'),
		"duplicate fields":     goldenWithInputs(0x02, 0x01, 'a', 0x01, '1', 0x01, 'a', 0x01, '2'),
		"empty field name":     goldenWithInputs(0x01, 0x00, 0x01, '1'),
		"too many fields":      goldenWithInputs(0x41),
		"over-long string":     goldenWithInputs(longString...),
		"invalid UTF-8":        goldenWithInputs(0x01, 0x01, 0xff, 0x01, '1'),
		"length past the end":  goldenWithInputs(0x01, 0x01, 'a', 0x7f, '1'),
		"count past the end":   goldenLeafBytes[:inputsAt+1],
		"huge length no bytes": goldenWithInputs(0x01, 0x01, 'a', 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for i := range goldenLeafBytes {
		cases[fmt.Sprintf("truncated to %d bytes", i)] = goldenLeafBytes[:i]
	}
	for name, b := range cases {
		leaf, err := receipt.DecodeLeaf(b)
		if leaf != nil {
			t.Errorf("%s: DecodeLeaf returned a leaf with its error", name)
		}
		wantSentinel(t, err, receipt.ErrMalformed, name)
	}
}
