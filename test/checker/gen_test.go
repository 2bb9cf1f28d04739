package checker

import (
	"fmt"
	"math/rand/v2"
	"sort"
)

// genConfig shapes a generated history: per key, clients issue operations
// back to back; each takes effect at a random point of its interval (or,
// when unanswered, possibly later or never), and the answers are computed
// by applying the effects in that order to a HARD budget, so every
// generated history is linearizable by construction.
type genConfig struct {
	keys, opsPerKey, clientsPerKey int
	readFraction                   float64
	// Fractions of consumes: unanswered and took effect; unanswered and
	// never took effect (at most neverPerKeyMax per key); unanswered and
	// then answered by a retry with the same request id.
	unknownHappened, unknownNever, retried float64
	neverPerKeyMax                         int
	// preciseAmounts draws amounts to the micro instead of from four
	// round values, so that sums rarely coincide.
	preciseAmounts bool
	// limitFactor sizes the budget: the fraction of the expected consumes
	// it admits (0: 0.7).
	limitFactor float64
}

// genEffect is one logical operation with the point it took effect at
// (-1: never) and the ops that recorded it.
type genEffect struct {
	atNs   int64
	read   bool
	amount int64
	ops    []int // indexes into History.Ops
}

func generate(seed uint64, cfg genConfig) (History, Final) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := History{Seed: int64(seed), Budgets: map[string]int64{}}
	final := Final{Spent: map[string]int64{}}
	var logIndex uint64
	for k := range cfg.keys {
		key := fmt.Sprintf("tenant/budget-%02d", k)
		meanAmount := int64(3 * unit / 2)
		limitFactor := cfg.limitFactor
		if limitFactor == 0 {
			limitFactor = 0.7
		}
		limit := max(int64(float64(cfg.opsPerKey)*(1-cfg.readFraction)*limitFactor), 1) * meanAmount
		h.Budgets[key] = limit
		clock := make([]int64, cfg.clientsPerKey)
		var effects []*genEffect
		never := 0
		add := func(op Op) int {
			op.ID = int64(len(h.Ops) + 1)
			op.Key = key
			h.Ops = append(h.Ops, op)
			return len(h.Ops) - 1
		}
		for n := 0; n < cfg.opsPerKey; n++ {
			c := rng.IntN(cfg.clientsPerKey)
			client := k*cfg.clientsPerKey + c
			inv := clock[c] + rng.Int64N(50)
			comp := inv + 10 + rng.Int64N(200)
			clock[c] = comp
			within := func(from, to int64) int64 { return from + rng.Int64N(to-from+1) }
			if rng.Float64() < cfg.readFraction {
				i := add(Op{Client: client, Kind: Read, Level: "linearizable", InvokeNs: inv, CompleteNs: comp, Status: OK})
				effects = append(effects, &genEffect{atNs: within(inv, comp), read: true, ops: []int{i}})
				continue
			}
			amount := (1 + rng.Int64N(4)) * unit / 2 // 0.5 .. 2 units
			if cfg.preciseAmounts {
				amount = unit/2 + rng.Int64N(3*unit/2) // any micros in 0.5 .. 2 units
			}
			consume := Op{Client: client, Kind: Consume, RequestID: fmt.Sprintf("%s/req-%d", key, n), Amount: amount,
				InvokeNs: inv, CompleteNs: comp, Status: OK}
			e := &genEffect{amount: amount}
			roll := rng.Float64()
			if roll < cfg.unknownNever && never == cfg.neverPerKeyMax {
				roll = 1 // the quota is spent: answered instead
			}
			switch {
			case roll < cfg.unknownNever:
				never++
				consume.Status = Unknown
				e.atNs = -1
				e.ops = []int{add(consume)}
			case roll < cfg.unknownNever+cfg.unknownHappened:
				consume.Status = Unknown
				e.atNs = within(inv, comp+300) // may land after the client gave up
				e.ops = []int{add(consume)}
			case roll < cfg.unknownNever+cfg.unknownHappened+cfg.retried:
				consume.Status = Unknown
				first := add(consume)
				retry := consume
				retry.Retry, retry.Status = true, OK
				retry.InvokeNs = comp + rng.Int64N(50)
				retry.CompleteNs = retry.InvokeNs + 10 + rng.Int64N(200)
				clock[c] = retry.CompleteNs
				e.atNs = within(inv, retry.CompleteNs)
				e.ops = []int{first, add(retry)}
				if rng.IntN(2) == 0 { // answered twice: the second answer repeats the first
					again := retry
					again.InvokeNs = retry.CompleteNs + 1
					again.CompleteNs = again.InvokeNs + 10
					clock[c] = again.CompleteNs
					e.ops = append(e.ops, add(again))
				}
			default:
				e.atNs = within(inv, comp)
				e.ops = []int{add(consume)}
			}
			effects = append(effects, e)
		}
		sort.SliceStable(effects, func(i, j int) bool { return effects[i].atNs < effects[j].atNs })
		var spent int64
		for _, e := range effects {
			if e.atNs < 0 {
				continue
			}
			if e.read {
				h.Ops[e.ops[0]].Spent = spent
				continue
			}
			allowed := e.amount <= limit-spent
			if allowed {
				spent += e.amount
			}
			logIndex++
			for _, i := range e.ops {
				if h.Ops[i].Status == OK {
					h.Ops[i].Allowed, h.Ops[i].Remaining, h.Ops[i].LogIndex = allowed, limit-spent, logIndex
				}
			}
		}
		final.Spent[key] = spent
	}
	final.Replicas = agreeingReplicas(logIndex)
	return h, final
}

func agreeingReplicas(index uint64) map[string]Replica {
	r := Replica{AppliedIndex: index, StateHash: "9f2c"}
	return map[string]Replica{"n1": r, "n2": r, "n3": r}
}
