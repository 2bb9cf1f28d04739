package checker

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestExpTiming(t *testing.T) {
	for _, never := range []int{0, 1, 2, 4, 8} {
		cfg := largeConfig
		cfg.neverPerKeyMax = never
		cfg.unknownNever = 0.03
		cfg.unknownHappened = 0
		cfg.keys = 2
		h, _ := generate(42, cfg)
		hs, _ := keyHistories(h)
		for _, kh := range hs {
			s := time.Now()
			calls := 0
			m := budgetModel(kh.limit)
			inner := m.StepContext
			m.StepContext = nil
			okUnknown, okKnown, failKnown := 0, 0, 0
			m.Step = func(st, in, out any) (bool, any) {
				calls++
				ok, next := inner(t.Context(), st, in, out)
				switch {
				case out.(budgetOutput).unknown:
					okUnknown++
				case ok:
					okKnown++
				default:
					failKnown++
				}
				return ok, next
			}
			r := porcupine.CheckOperationsTimeout(m, kh.ops, 20*time.Second)
			t.Logf("never %d %s %v %v steps %d ops %d (ok unknown %d, ok known %d, failed %d)", never, kh.key, r, time.Since(s), calls, len(kh.ops), okUnknown, okKnown, failKnown)
		}
	}
}
