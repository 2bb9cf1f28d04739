package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/fsm"
)

type metrics struct {
	entries          prometheus.Counter
	commandsPerEntry prometheus.Histogram
	decisions        *prometheus.CounterVec
	proposeSeconds   prometheus.Histogram
	forwarded        prometheus.Counter
	storeBatches     prometheus.Histogram
	restores         prometheus.Counter
	receiptErrors    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		entries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_log_entries_applied_total",
			Help: "Log entries with commands applied to the state machine.",
		}),
		commandsPerEntry: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_commands_per_entry",
			Help:    "Commands carried by each applied log entry (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_decisions_total",
			Help: "Decisions applied, by kind (budget, rate) and outcome (allowed, denied, rejected).",
		}, []string{"kind", "outcome"}),
		proposeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_propose_seconds",
			Help:    "Time from handing commands to the batcher to their result.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_forwarded_commands_total",
			Help: "Commands this node forwarded to the leader.",
		}),
		storeBatches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_log_entries_per_fsync",
			Help:    "Log entries written by each log-store write (one bbolt transaction, one fsync).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_snapshot_restores_total",
			Help: "Snapshots restored into the state machine (at start, installed from the leader, or uploaded).",
		}),
		receiptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_receipt_store_errors_total",
			Help: "Failed writes to this node's receipt store (the decisions stand; the receipts are on the other replicas).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.entries, m.commandsPerEntry, m.decisions, m.proposeSeconds, m.forwarded, m.storeBatches, m.restores, m.receiptErrors)
	}
	return m
}

func (m *metrics) observeEntry(res *fsm.EntryResult) {
	m.entries.Inc()
	m.commandsPerEntry.Observe(float64(len(res.Results)))
	for i := range res.Results {
		r := &res.Results[i]
		switch {
		case r.Err != nil:
			m.decisions.WithLabelValues("any", "rejected").Inc()
		case r.Spend != nil:
			m.decisions.WithLabelValues("budget", outcome(r.Spend.Allowed)).Inc()
		case r.Rate != nil:
			m.decisions.WithLabelValues("rate", outcome(r.Rate.Allowed)).Inc()
		case r.Batch != nil:
			for _, b := range r.Batch {
				m.decisions.WithLabelValues("budget", outcome(b.Allowed)).Inc()
			}
		}
	}
}

func outcome(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}
