package fsm

// expiryHeap is a binary min-heap ordered by less. The FSM uses it for hold
// and rate-key expiry; entries may be stale (the caller checks identity when
// popping), so only the set of expired live objects matters, never the heap's
// internal layout: restored and original replicas expire the same objects.
type expiryHeap[T any] struct {
	items []T
	less  func(a, b T) bool
}

func (h *expiryHeap[T]) Len() int { return len(h.items) }

func (h *expiryHeap[T]) Peek() T { return h.items[0] }

func (h *expiryHeap[T]) Push(x T) {
	h.items = append(h.items, x)
	i := len(h.items) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(h.items[i], h.items[parent]) {
			break
		}
		h.items[i], h.items[parent] = h.items[parent], h.items[i]
		i = parent
	}
}

func (h *expiryHeap[T]) Pop() T {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	var zero T
	h.items[last] = zero
	h.items = h.items[:last]
	i := 0
	for {
		smallest, l, r := i, 2*i+1, 2*i+2
		if l < last && h.less(h.items[l], h.items[smallest]) {
			smallest = l
		}
		if r < last && h.less(h.items[r], h.items[smallest]) {
			smallest = r
		}
		if smallest == i {
			return top
		}
		h.items[i], h.items[smallest] = h.items[smallest], h.items[i]
		i = smallest
	}
}
