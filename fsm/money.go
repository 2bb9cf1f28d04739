package fsm

import (
	"strconv"
	"strings"

	"golang.org/x/text/currency"
)

// Money is exact: an int64 count of micro-units (10^-6) of a currency. Floats
// never touch it.
const (
	// MicrosPerUnit is the number of micro-units in one unit of a currency.
	MicrosPerUnit = 1_000_000
	// FractionDigitsMax is the most fractional digits an amount may have.
	FractionDigitsMax = 6
	// AmountMaxMicros bounds every amount on the wire (one trillion units), so
	// that sums of a bounded number of them cannot overflow int64 unnoticed.
	AmountMaxMicros int64 = 1_000_000_000_000 * MicrosPerUnit
)

// ParseAmount parses a non-negative decimal string ("12", "0.0125") into
// micro-units. It rejects signs, exponents, more than 6 fractional digits and
// anything above AmountMaxMicros. The error message does not name the field;
// callers prefix it.
func ParseAmount(s string) (int64, *Error) {
	if s == "" {
		return 0, invalidf("is empty; want a decimal string such as \"12.50\"")
	}
	if len(s) > 32 {
		return 0, invalidf("is %d characters long; at most 32", len(s))
	}
	if s[0] == '-' {
		return 0, invalidf("%q is negative", s)
	}
	intPart, fracPart, hasDot := strings.Cut(s, ".")
	if intPart == "" || (hasDot && fracPart == "") || !allDigits(intPart) || !allDigits(fracPart) {
		return 0, invalidf("%q is not a decimal number", s)
	}
	if len(fracPart) > FractionDigitsMax {
		return 0, invalidf("%q has %d fractional digits; at most %d", s, len(fracPart), FractionDigitsMax)
	}
	intPart = strings.TrimLeft(intPart, "0")
	if len(intPart) > 13 {
		return 0, invalidf("%q is above the maximum amount 1000000000000", s)
	}
	units := int64(0)
	if intPart != "" {
		units, _ = strconv.ParseInt(intPart, 10, 64) // at most 13 digits: cannot fail
	}
	// Checked before multiplying: 13 digits of units times 10^6 can overflow.
	if units > AmountMaxMicros/MicrosPerUnit {
		return 0, invalidf("%q is above the maximum amount 1000000000000", s)
	}
	frac := int64(0)
	if fracPart != "" {
		frac, _ = strconv.ParseInt(fracPart+strings.Repeat("0", FractionDigitsMax-len(fracPart)), 10, 64)
	}
	micros := units*MicrosPerUnit + frac
	if micros > AmountMaxMicros {
		return 0, invalidf("%q is above the maximum amount 1000000000000", s)
	}
	return micros, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatAmount renders micro-units as a decimal string with at least
// minFractionDigits and at most 6 fractional digits, trailing zeros beyond the
// minimum trimmed: FormatAmount(999987500, 2) == "999.9875".
func FormatAmount(micros int64, minFractionDigits int) string {
	neg := micros < 0
	u := uint64(micros)
	if neg {
		u = uint64(-micros) // also right for MinInt64 in two's complement
	}
	units := u / MicrosPerUnit
	frac := u % MicrosPerUnit
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(strconv.FormatUint(units, 10))
	fs := strconv.FormatUint(frac+MicrosPerUnit, 10)[1:] // six digits, zero padded
	keep := len(fs)
	for keep > minFractionDigits && fs[keep-1] == '0' {
		keep--
	}
	if keep > 0 {
		b.WriteByte('.')
		b.WriteString(fs[:keep])
	}
	return b.String()
}

// ValidateCurrency accepts upper-case ISO 4217 codes known to x/text.
func ValidateCurrency(code string) *Error {
	if len(code) != 3 || strings.ToUpper(code) != code {
		return invalidf("%q is not an ISO 4217 code (three upper-case letters such as \"USD\")", code)
	}
	if _, err := currency.ParseISO(code); err != nil {
		return invalidf("%q is not a known ISO 4217 currency", code)
	}
	return nil
}

// CurrencyFractionDigits is the number of minor-unit digits a currency is
// usually shown with (USD 2, JPY 0); amounts still carry up to 6.
func CurrencyFractionDigits(code string) int {
	unit, err := currency.ParseISO(code)
	if err != nil {
		return 2
	}
	scale, _ := currency.Standard.Rounding(unit)
	return scale
}

// addMicros adds two amounts and reports overflow instead of wrapping.
func addMicros(a, b int64) (int64, bool) {
	sum := a + b
	if (b > 0 && sum < a) || (b < 0 && sum > a) {
		return 0, false
	}
	return sum, true
}
