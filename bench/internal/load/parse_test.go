package load

import "testing"

// Cases of the Redis driver, which had its own parser.
func TestParseMicrosRedisCases(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1_000_000, "1.00": 1_000_000, "0.25": 250_000, ".5": 500_000,
		"0.000001": 1, "123.456789": 123_456_789, "+2.5": 2_500_000, "0": 0,
	} {
		got, err := ParseMicros(in)
		if err != nil || got != want {
			t.Errorf("ParseMicros(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".", "-1", "1.0000001", "1e3", "1.2.3", "abc", " 1", "99999999999999999999"} {
		if v, err := ParseMicros(in); err == nil {
			t.Errorf("ParseMicros(%q) = %d, want an error", in, v)
		}
	}
}

// Cases of the etcd driver, which had its own parser.
func TestParseMicrosEtcdCases(t *testing.T) {
	good := map[string]int64{
		"1": 1_000_000, "1.00": 1_000_000, "0.25": 250_000, ".5": 500_000,
		"3.": 3_000_000, "0.000001": 1, "12.345678000": 12_345_678, "0": 0,
	}
	for s, want := range good {
		got, err := ParseMicros(s)
		if err != nil || got != want {
			t.Errorf("ParseMicros(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", ".", "-1", "1.0000001", "12.3456789000", "1e3", "abc", "1.2.3", "99999999999999999999"} {
		if got, err := ParseMicros(s); err == nil {
			t.Errorf("ParseMicros(%q) = %d, want an error", s, got)
		}
	}
}
