package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Limits of the wire format. A decoder refuses anything larger, so a corrupt
// or hostile entry cannot make a replica allocate without bound.
const (
	// EntryCommandsMax is the most commands one log entry may carry.
	EntryCommandsMax = 65_536
	// CommandBytesMax is the largest encoded command.
	CommandBytesMax = 4 << 20
	// entryTimeMaxMs bounds an entry's log time (and a snapshot's).
	entryTimeMaxMs = 1 << 62
	// entryFormatV1 is the first byte of every entry.
	entryFormatV1 byte = 1
)

// commandFactories maps each type to a constructor. Registration happens once,
// in init, and panics on a duplicate so two commands can never share a number.
var commandFactories = map[CommandType]func() Command{}

func registerCommand(t CommandType, factory func() Command) {
	if _, dup := commandFactories[t]; dup {
		panic(fmt.Sprintf("fsm: command type %d registered twice", t))
	}
	if got := factory().Type(); got != t {
		panic(fmt.Sprintf("fsm: command type %d registered with a %d factory", t, got))
	}
	commandFactories[t] = factory
}

func init() {
	registerCommand(TypeNoop, func() Command { return &Noop{} })
	registerCommand(TypeCreateBudget, func() Command { return &CreateBudget{} })
	registerCommand(TypeUpdateBudget, func() Command { return &UpdateBudget{} })
	registerCommand(TypeDeleteBudget, func() Command { return &DeleteBudget{} })
	registerCommand(TypeConsume, func() Command { return &Consume{} })
	registerCommand(TypeConsumeAtomic, func() Command { return &ConsumeAtomic{} })
	registerCommand(TypeReserve, func() Command { return &Reserve{} })
	registerCommand(TypeCommit, func() Command { return &Commit{} })
	registerCommand(TypeRelease, func() Command { return &Release{} })
	registerCommand(TypeCreatePolicy, func() Command { return &CreatePolicy{} })
	registerCommand(TypeUpdatePolicy, func() Command { return &UpdatePolicy{} })
	registerCommand(TypeDeletePolicy, func() Command { return &DeletePolicy{} })
	registerCommand(TypeRateCheck, func() Command { return &RateCheck{} })
	registerCommand(TypeMarkServerRemoved, func() Command { return &MarkServerRemoved{} })
	registerCommand(TypeRotateSigningKey, func() Command { return &RotateSigningKey{} })
	registerCommand(TypeRecordCost, func() Command { return &RecordCost{} })
	registerCommand(TypeSetExchangeRates, func() Command { return &SetExchangeRates{} })
	registerCommand(TypeSetAnomalyDetector, func() Command { return &SetAnomalyDetector{} })
	registerCommand(TypeCreateQuotaPool, func() Command { return &CreateQuotaPool{} })
	registerCommand(TypeSetQuotaConsumer, func() Command { return &SetQuotaConsumer{} })
	registerCommand(TypeSetQuotaDemand, func() Command { return &SetQuotaDemand{} })
	registerCommand(TypeQuotaConsume, func() Command { return &QuotaConsume{} })
	registerCommand(TypeRenewQuotaPool, func() Command { return &RenewQuotaPool{} })
	registerCommand(TypeAckAlert, func() Command { return &AckAlert{} })
	registerCommand(TypeUpdateQuotaPool, func() Command { return &UpdateQuotaPool{} })
	registerCommand(TypeDeleteQuotaPool, func() Command { return &DeleteQuotaPool{} })
	registerCommand(TypeSetQuotaConsumers, func() Command { return &SetQuotaConsumers{} })
	registerCommand(TypeCreateAPIKey, func() Command { return &CreateAPIKey{} })
	registerCommand(TypeRevokeAPIKey, func() Command { return &RevokeAPIKey{} })
}

// EncodeCommand returns the type byte followed by the msgpack body.
func EncodeCommand(c Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(byte(c.Type()))
	if err := encodeMsgpack(&buf, c); err != nil {
		return nil, fmt.Errorf("encode command %d: %w", c.Type(), err)
	}
	return buf.Bytes(), nil
}

// DecodeCommand is the inverse of EncodeCommand. Unknown types, unknown fields
// and trailing bytes are errors: a replica that cannot understand an entry
// exactly must not guess.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("empty command")
	}
	if len(b) > CommandBytesMax {
		return nil, fmt.Errorf("command of %d bytes exceeds %d", len(b), CommandBytesMax)
	}
	factory, ok := commandFactories[CommandType(b[0])]
	if !ok {
		return nil, fmt.Errorf("unknown command type %d", b[0])
	}
	c := factory()
	if err := decodeMsgpack(b[1:], c); err != nil {
		return nil, fmt.Errorf("decode command type %d: %w", b[0], err)
	}
	return c, nil
}

func encodeMsgpack(buf *bytes.Buffer, v any) error {
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	return enc.Encode(v)
}

func decodeMsgpack(b []byte, v any) error {
	if err := checkMsgpackLengths(b); err != nil {
		return err
	}
	r := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if r.Len() != 0 {
		return fmt.Errorf("%d trailing bytes", r.Len())
	}
	return nil
}

// Entry is one Raft log entry: a batch of encoded commands stamped with the
// leader's clock. The FSM applies them in order and returns one result each.
type Entry struct {
	// NowMs is the leader's time (ms since the Unix epoch) when it built the
	// entry. Every time-dependent decision uses it, never a local clock.
	NowMs    int64
	Commands [][]byte
}

// EncodeEntry frames an entry: format byte, uvarint now, uvarint count, then
// each command as uvarint length + bytes.
func EncodeEntry(e Entry) []byte {
	size := 1 + 2*binary.MaxVarintLen64
	for _, c := range e.Commands {
		size += binary.MaxVarintLen64 + len(c)
	}
	b := make([]byte, 0, size)
	b = append(b, entryFormatV1)
	b = binary.AppendUvarint(b, uint64(e.NowMs))
	b = binary.AppendUvarint(b, uint64(len(e.Commands)))
	for _, c := range e.Commands {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b
}

// DecodeEntry is the inverse of EncodeEntry. The command slices alias b.
func DecodeEntry(b []byte) (Entry, error) {
	if len(b) == 0 || b[0] != entryFormatV1 {
		return Entry{}, fmt.Errorf("unknown entry format")
	}
	b = b[1:]
	now, n := binary.Uvarint(b)
	if n <= 0 || now > entryTimeMaxMs {
		return Entry{}, fmt.Errorf("bad entry time")
	}
	b = b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > EntryCommandsMax {
		return Entry{}, fmt.Errorf("bad command count")
	}
	b = b[n:]
	e := Entry{NowMs: int64(now), Commands: make([][]byte, 0, count)}
	for i := uint64(0); i < count; i++ {
		size, n := binary.Uvarint(b)
		if n <= 0 || size > CommandBytesMax || size > uint64(len(b)-n) {
			return Entry{}, fmt.Errorf("bad length of command %d", i)
		}
		b = b[n:]
		e.Commands = append(e.Commands, b[:size:size])
		b = b[size:]
	}
	if len(b) != 0 {
		return Entry{}, fmt.Errorf("%d trailing bytes after %d commands", len(b), count)
	}
	return e, nil
}

// checkMsgpackLengths refuses msgpack whose array, map, string, binary or
// extension headers declare more than the bytes that follow could hold.
// msgpack v5.4.1 allocates a slice of the declared length before reading any
// element (its sliceAllocLimit is never applied: vmihailenco/msgpack#401),
// so five bytes could otherwise make a replica allocate tens of gigabytes.
// Every element takes at least one byte, so valid input always passes. The
// scan is linear and not recursive: a container contributes only its header.
func checkMsgpackLengths(b []byte) error {
	// be reads an n-byte big-endian length at b[i:].
	be := func(i, n int) (uint64, bool) {
		if i+n > len(b) {
			return 0, false
		}
		var v uint64
		for _, c := range b[i : i+n] {
			v = v<<8 | uint64(c)
		}
		return v, true
	}
	for i := 0; i < len(b); {
		c := b[i]
		var header, lenBytes int // header bytes before the length; bytes of the length
		var elems uint64         // declared container elements (map pairs count twice)
		payload, extra := false, 0
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			i++
			continue
		case c&0xf0 == 0x80: // fixmap
			elems, header = 2*uint64(c&0x0f), 1
		case c&0xf0 == 0x90: // fixarray
			elems, header = uint64(c&0x0f), 1
		case c&0xe0 == 0xa0: // fixstr
			if i+1+int(c&0x1f) > len(b) {
				return fmt.Errorf("msgpack string at byte %d runs past the end", i)
			}
			i += 1 + int(c&0x1f)
			continue
		case c >= 0xc4 && c <= 0xc6: // bin 8/16/32
			lenBytes, payload = 1<<(c-0xc4), true
		case c >= 0xc7 && c <= 0xc9: // ext 8/16/32: length, then a type byte
			lenBytes, payload, extra = 1<<(c-0xc7), true, 1
		case c >= 0xd9 && c <= 0xdb: // str 8/16/32
			lenBytes, payload = 1<<(c-0xd9), true
		case c == 0xca: // float32
			i += 1 + 4
			continue
		case c == 0xcb: // float64
			i += 1 + 8
			continue
		case c >= 0xcc && c <= 0xcf: // uint 8/16/32/64
			i += 1 + 1<<(c-0xcc)
			continue
		case c >= 0xd0 && c <= 0xd3: // int 8/16/32/64
			i += 1 + 1<<(c-0xd0)
			continue
		case c >= 0xd4 && c <= 0xd8: // fixext 1/2/4/8/16: type byte, data
			i += 2 + 1<<(c-0xd4)
			continue
		case c == 0xdc || c == 0xdd: // array 16/32
			n, ok := be(i+1, 2<<(c-0xdc))
			if !ok {
				return fmt.Errorf("msgpack array header at byte %d runs past the end", i)
			}
			elems, header = n, 1+2<<(c-0xdc)
		case c == 0xde || c == 0xdf: // map 16/32
			n, ok := be(i+1, 2<<(c-0xde))
			if !ok {
				return fmt.Errorf("msgpack map header at byte %d runs past the end", i)
			}
			elems, header = 2*n, 1+2<<(c-0xde)
		default: // 0xc1 is never used
			return fmt.Errorf("invalid msgpack code 0x%x at byte %d", c, i)
		}
		if payload {
			n, ok := be(i+1, lenBytes)
			if !ok || n+uint64(extra) > uint64(len(b)-i-1-lenBytes) {
				return fmt.Errorf("msgpack value at byte %d is longer than the input", i)
			}
			i += 1 + lenBytes + extra + int(n)
			continue
		}
		i += header
		if elems > uint64(len(b)-i) {
			return fmt.Errorf("msgpack container at byte %d declares %d elements in %d bytes", i-header, elems, len(b)-i)
		}
	}
	return nil
}
