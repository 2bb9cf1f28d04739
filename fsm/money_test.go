package fsm_test

import (
	"math"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

func TestParseAmountAccepts(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0.0", 0},
		{"1", 1_000_000},
		{"12", 12_000_000},
		{"12.50", 12_500_000},
		{"0.0125", 12_500},
		{"0.000001", 1},
		{"999.9875", 999_987_500},
		{"007.5", 7_500_000},
		{"123456.654321", 123_456_654_321},
		{"1000000000000", fsm.AmountMaxMicros},
		{"1000000000000.000000", fsm.AmountMaxMicros},
		{"0001000000000000", fsm.AmountMaxMicros},
		{"999999999999.999999", fsm.AmountMaxMicros - 1},
	}
	for _, c := range cases {
		got, err := fsm.ParseAmount(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseAmount(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestParseAmountRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"-1",
		"-0.5",
		"+1",
		"1e3",
		"1E3",
		".5",
		"1.",
		".",
		" 1",
		"1 ",
		"1,5",
		"1.2.3",
		"0x10",
		"0.0000001", // seven fractional digits
		"1.1234567", // seven fractional digits
		"1000000000000.000001",
		"1000000000001",
		"9223372036854", // the largest units that do not overflow when scaled
		"9223372036855", // units * 10^6 overflows int64
		"9999999999999", // must not wrap to a negative amount
		"10000000000000",
		"123456789012345678901234567890123", // 33 characters
		"NaN",
		"Inf",
		"١", // a non-ASCII digit
	} {
		got, err := fsm.ParseAmount(in)
		if err == nil {
			t.Errorf("ParseAmount(%q) = %d, want an error", in, got)
			continue
		}
		if err.Code != fsm.CodeInvalidArgument || got != 0 {
			t.Errorf("ParseAmount(%q) = %d, code %d; want 0 and InvalidArgument", in, got, err.Code)
		}
	}
}

func TestFormatAmount(t *testing.T) {
	cases := []struct {
		micros  int64
		minFrac int
		want    string
	}{
		{999_987_500, 2, "999.9875"},
		{0, 2, "0.00"},
		{0, 0, "0"},
		{1, 2, "0.000001"},
		{12_500, 2, "0.0125"},
		{12_500_000, 2, "12.50"},
		{12_000_000, 0, "12"},
		{12_000_000, 2, "12.00"},
		{12_000_000, 6, "12.000000"},
		{12_000_000, 9, "12.000000"}, // never more than six digits
		{-1, 2, "-0.000001"},
		{-1_500_000, 2, "-1.50"},
		{-12_345_678, 0, "-12.345678"},
		{fsm.AmountMaxMicros, 2, "1000000000000.00"},
		{math.MaxInt64, 0, "9223372036854.775807"},
		{math.MinInt64, 0, "-9223372036854.775808"},
	}
	for _, c := range cases {
		if got := fsm.FormatAmount(c.micros, c.minFrac); got != c.want {
			t.Errorf("FormatAmount(%d, %d) = %q, want %q", c.micros, c.minFrac, got, c.want)
		}
	}
}

// Every amount that formats parses back to itself.
func TestFormatParseRoundTrip(t *testing.T) {
	for _, micros := range []int64{0, 1, 10, 999_999, 1_000_000, 1_000_001, 12_500, 987_654_321_012, fsm.AmountMaxMicros} {
		for _, minFrac := range []int{0, 2, 6} {
			s := fsm.FormatAmount(micros, minFrac)
			got, err := fsm.ParseAmount(s)
			if err != nil || got != micros {
				t.Errorf("ParseAmount(FormatAmount(%d, %d) = %q) = %d, %v", micros, minFrac, s, got, err)
			}
		}
	}
}

func TestValidateCurrency(t *testing.T) {
	for _, ok := range []string{"USD", "EUR", "JPY", "CHF", "GBP"} {
		if err := fsm.ValidateCurrency(ok); err != nil {
			t.Errorf("ValidateCurrency(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"usd", "Usd", "XYZ", "US", "USDD", "", "U$D", "123"} {
		err := fsm.ValidateCurrency(bad)
		if err == nil || err.Code != fsm.CodeInvalidArgument {
			t.Errorf("ValidateCurrency(%q) = %v, want InvalidArgument", bad, err)
		}
	}
}

func TestCurrencyFractionDigits(t *testing.T) {
	for code, want := range map[string]int{"USD": 2, "EUR": 2, "JPY": 0, "BHD": 3} {
		if got := fsm.CurrencyFractionDigits(code); got != want {
			t.Errorf("CurrencyFractionDigits(%q) = %d, want %d", code, got, want)
		}
	}
}
