package node

import (
	"reflect"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

// Helpers of the planted bugs (see planted_on.go). Reached only when
// planted(...) is true, which release builds make a constant false.

// plantedStripRequestIDs re-encodes commands without their request ids.
func plantedStripRequestIDs(cmds [][]byte) [][]byte {
	out := make([][]byte, len(cmds))
	for i, b := range cmds {
		out[i] = b
		c, err := fsm.DecodeCommand(b)
		if err != nil {
			continue
		}
		if f := reflect.ValueOf(c).Elem().FieldByName("RequestID"); f.IsValid() && f.CanSet() {
			f.SetString("")
			if enc, err := fsm.EncodeCommand(c); err == nil {
				out[i] = enc
			}
		}
	}
	return out
}

// plantedRestamp replaces an entry's leader stamp with this replica's clock.
func plantedRestamp(data []byte) []byte {
	e, err := fsm.DecodeEntry(data)
	if err != nil {
		return data
	}
	e.NowMs = time.Now().UnixMilli()
	return fsm.EncodeEntry(e)
}
