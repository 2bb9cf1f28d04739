package node

import (
	"reflect"
	"testing"
)

func TestMissingRanges(t *testing.T) {
	var rs []IndexRange
	rs = addRange(rs, IndexRange{10, 20})
	rs = addRange(rs, IndexRange{30, 40})
	rs = addRange(rs, IndexRange{21, 25}) // adjacent: merges
	if want := []IndexRange{{10, 25}, {30, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after adds: %v, want %v", rs, want)
	}
	rs = addRange(rs, IndexRange{1, 35}) // overlaps both
	if want := []IndexRange{{1, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after an overlapping add: %v, want %v", rs, want)
	}
	rs = removeRange(rs, IndexRange{5, 9})
	if want := []IndexRange{{1, 4}, {10, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after a remove in the middle: %v, want %v", rs, want)
	}
	rs = removeRange(rs, IndexRange{0, 12})
	if want := []IndexRange{{13, 40}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("after a remove from the start: %v, want %v", rs, want)
	}
	if got := decodeRanges(encodeRanges(rs)); !reflect.DeepEqual(got, rs) {
		t.Fatalf("round trip %v", got)
	}
	if rs = removeRange(rs, IndexRange{13, 40}); len(rs) != 0 {
		t.Fatalf("after removing everything: %v", rs)
	}
	for i := uint64(0); i < missingMax+10; i++ {
		rs = addRange(rs, IndexRange{i * 10, i*10 + 1})
	}
	if len(rs) != missingMax || rs[0].From != 0 {
		t.Fatalf("%d ranges kept (first %v), want %d starting at 0", len(rs), rs[0], missingMax)
	}
}
