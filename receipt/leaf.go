package receipt

import (
	"encoding/binary"
	"unicode/utf8"
)

// Limits of a leaf. Encode refuses and DecodeLeaf rejects anything larger, so a
// hostile receipt cannot make a verifier allocate without bound.
const (
	// LeafStringMax is the longest string in a leaf, in bytes.
	LeafStringMax = 4096
	// LeafFieldsMax is the most fields in Inputs, and the most in Balances.
	LeafFieldsMax = 64

	// leafVersion is the first byte of every encoded leaf.
	leafVersion byte = 0x01
	// leafFixedBytes covers the version, Index, Position and TimeUnixMs.
	leafFixedBytes = 1 + 8 + 4 + 8
)

// Field is one name/value pair of a leaf's inputs or balances. Values are strings
// (decimal amounts like "0.0125", integers in base 10, enum names).
type Field struct{ Name, Value string }

// Leaf is one decision.
type Leaf struct {
	Index      uint64 // log index of the entry that decided
	Position   uint32 // the leaf's position in the entry's tree, 0-based
	TimeUnixMs int64  // the entry's log time (leader stamp)
	Tenant     string
	Operation  string // e.g. "budget.consume", "ratelimit.check"
	Object     string // e.g. the budget id, or "policy-id/key"
	RequestID  string
	Inputs     []Field // sorted by Name, names unique and non-empty
	Outcome    string  // "allowed", "denied", "ok", ...
	Reason     string  // deny reason or empty
	Balances   []Field // state after the decision; sorted by Name, unique
}

// Encode returns the canonical encoding (docs/receipts.md, "Leaf encoding"). It
// returns an error wrapping ErrMalformed if a field list is not sorted by name
// with unique non-empty names, a string is not UTF-8 or exceeds LeafStringMax
// bytes, or a list exceeds LeafFieldsMax fields.
func (l *Leaf) Encode() ([]byte, error) {
	if l == nil {
		return nil, errorf(ErrMalformed, "leaf: nil")
	}
	if err := l.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, l.encodedSize())
	b = append(b, leafVersion)
	b = binary.BigEndian.AppendUint64(b, l.Index)
	b = binary.BigEndian.AppendUint32(b, l.Position)
	b = binary.BigEndian.AppendUint64(b, uint64(l.TimeUnixMs))
	b = appendString(b, l.Tenant)
	b = appendString(b, l.Operation)
	b = appendString(b, l.Object)
	b = appendString(b, l.RequestID)
	b = appendFields(b, l.Inputs)
	b = appendString(b, l.Outcome)
	b = appendString(b, l.Reason)
	b = appendFields(b, l.Balances)
	return b, nil
}

// DecodeLeaf decodes an encoded leaf. It is strict: it rejects anything Encode
// would not produce (unknown version, non-minimal varints, unsorted or duplicate
// fields, invalid UTF-8, over-long strings, trailing bytes), so one leaf has
// exactly one encoding and one leaf hash. Errors wrap ErrMalformed.
func DecodeLeaf(b []byte) (*Leaf, error) {
	if len(b) < leafFixedBytes {
		return nil, errorf(ErrMalformed, "leaf: %d bytes, shorter than the %d-byte header", len(b), leafFixedBytes)
	}
	if b[0] != leafVersion {
		return nil, errorf(ErrMalformed, "leaf: unknown version %d, want %d", b[0], leafVersion)
	}
	l := &Leaf{
		Index:      binary.BigEndian.Uint64(b[1:9]),
		Position:   binary.BigEndian.Uint32(b[9:13]),
		TimeUnixMs: int64(binary.BigEndian.Uint64(b[13:21])),
	}
	d := leafDecoder{rest: b[leafFixedBytes:]}
	l.Tenant = d.string("tenant")
	l.Operation = d.string("operation")
	l.Object = d.string("object")
	l.RequestID = d.string("request id")
	l.Inputs = d.fields("inputs")
	l.Outcome = d.string("outcome")
	l.Reason = d.string("reason")
	l.Balances = d.fields("balances")
	if d.err != nil {
		return nil, d.err
	}
	if len(d.rest) != 0 {
		return nil, errorf(ErrMalformed, "leaf: %d trailing bytes", len(d.rest))
	}
	// A decoded leaf re-validates with Encode's rules, so the two cannot drift apart.
	if err := l.validate(); err != nil {
		return nil, err
	}
	return l, nil
}

// validate checks the rules Encode enforces.
func (l *Leaf) validate() error {
	named := [...]struct{ what, value string }{
		{"tenant", l.Tenant}, {"operation", l.Operation}, {"object", l.Object},
		{"request id", l.RequestID}, {"outcome", l.Outcome}, {"reason", l.Reason},
	}
	for _, s := range named {
		if err := checkString(s.what, s.value); err != nil {
			return err
		}
	}
	if err := checkFields("inputs", l.Inputs); err != nil {
		return err
	}
	return checkFields("balances", l.Balances)
}

func checkString(what, s string) error {
	if len(s) > LeafStringMax {
		return errorf(ErrMalformed, "leaf: %s is %d bytes, more than %d", what, len(s), LeafStringMax)
	}
	if !utf8.ValidString(s) {
		return errorf(ErrMalformed, "leaf: %s %q is not valid UTF-8", what, s)
	}
	return nil
}

// checkFields checks a field list: at most LeafFieldsMax fields, names non-empty
// and strictly increasing in byte order, every string valid.
func checkFields(what string, fields []Field) error {
	if len(fields) > LeafFieldsMax {
		return errorf(ErrMalformed, "leaf: %s has %d fields, more than %d", what, len(fields), LeafFieldsMax)
	}
	for i, f := range fields {
		if f.Name == "" {
			return errorf(ErrMalformed, "leaf: %s field %d has an empty name", what, i)
		}
		if i > 0 && f.Name <= fields[i-1].Name {
			return errorf(ErrMalformed, "leaf: %s are not sorted by unique name: %q follows %q",
				what, f.Name, fields[i-1].Name)
		}
		if err := checkString(what+" name", f.Name); err != nil {
			return err
		}
		if err := checkString(what+" "+f.Name, f.Value); err != nil {
			return err
		}
	}
	return nil
}

// encodedSize is the exact length of the encoding, so Encode allocates once.
func (l *Leaf) encodedSize() int {
	n := leafFixedBytes
	for _, s := range [...]string{l.Tenant, l.Operation, l.Object, l.RequestID, l.Outcome, l.Reason} {
		n += uvarintSize(uint64(len(s))) + len(s)
	}
	for _, fields := range [...][]Field{l.Inputs, l.Balances} {
		n += uvarintSize(uint64(len(fields)))
		for _, f := range fields {
			n += uvarintSize(uint64(len(f.Name))) + len(f.Name)
			n += uvarintSize(uint64(len(f.Value))) + len(f.Value)
		}
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFields(b []byte, fields []Field) []byte {
	b = binary.AppendUvarint(b, uint64(len(fields)))
	for _, f := range fields {
		b = appendString(b, f.Name)
		b = appendString(b, f.Value)
	}
	return b
}

// uvarintSize is the length of the minimal uvarint encoding of v.
func uvarintSize(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// leafDecoder reads the variable part of a leaf. After the first error every
// read returns a zero value, so DecodeLeaf checks err once at the end.
type leafDecoder struct {
	rest []byte
	err  error
}

func (d *leafDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = errorf(ErrMalformed, "leaf: "+format, args...)
	}
}

// uvarint reads a minimal uvarint.
func (d *leafDecoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.rest)
	if n <= 0 {
		d.fail("%s: truncated or overflowing varint", what)
		return 0
	}
	// binary.Uvarint accepts padded encodings such as 0x80 0x00 for 0; a second
	// spelling of a length would give a second hash of the same leaf.
	if n != uvarintSize(v) {
		d.fail("%s: non-minimal varint", what)
		return 0
	}
	d.rest = d.rest[n:]
	return v
}

// string reads a length-prefixed string; its content is checked by validate.
func (d *leafDecoder) string(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > LeafStringMax {
		d.fail("%s is %d bytes, more than %d", what, n, LeafStringMax)
		return ""
	}
	if n > uint64(len(d.rest)) {
		d.fail("%s is %d bytes but only %d remain", what, n, len(d.rest))
		return ""
	}
	s := string(d.rest[:n])
	d.rest = d.rest[n:]
	return s
}

// fields reads a field list; order and names are checked by validate.
func (d *leafDecoder) fields(what string) []Field {
	n := d.uvarint(what + " count")
	if d.err != nil {
		return nil
	}
	if n > LeafFieldsMax {
		d.fail("%s has %d fields, more than %d", what, n, LeafFieldsMax)
		return nil
	}
	if n == 0 {
		return nil
	}
	fields := make([]Field, n)
	for i := range fields {
		fields[i].Name = d.string(what + " name")
		fields[i].Value = d.string(what + " value")
	}
	if d.err != nil {
		return nil
	}
	return fields
}
