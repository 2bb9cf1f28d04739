// Package report writes a benchmark run as JSON, a markdown table with the
// ratios the goals ask for, and PNG plots.
package report

import (
	"time"

	"github.com/tollgate/tollgate/bench/internal/load"
)

// Floors are the physical limits measured in the same run.
type Floors struct {
	// FsyncP50us / FsyncP99us: 4 KiB write + fdatasync on the data disk.
	FsyncP50us float64 `json:"fsync_p50_us"`
	FsyncP99us float64 `json:"fsync_p99_us"`
	// RTTP50us / RTTP99us: 1-byte TCP ping-pong over loopback.
	RTTP50us float64 `json:"loopback_rtt_p50_us"`
	RTTP99us float64 `json:"loopback_rtt_p99_us"`
	// NoopRPCPerSecond: a no-op Connect handler (gRPC health check) served
	// by a pinned server process, 64 concurrent clients.
	NoopRPCPerSecond float64 `json:"noop_rpc_per_second"`
	// NoopRPCP50us: its median latency at 1 client.
	NoopRPCP50us float64 `json:"noop_rpc_p50_us"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUModel   string  `json:"cpu_model"`
	CPUs       int     `json:"cpus"`
	MemoryGiB  float64 `json:"memory_gib"`
	Kernel     string  `json:"kernel"`
	GoVersion  string  `json:"go_version"`
	DataDisk   string  `json:"data_disk"`   // filesystem of the data dir (from /proc/mounts)
	ServerCPUs string  `json:"server_cpus"` // taskset list the servers ran on
	ClientCPUs string  `json:"client_cpus"` // taskset list the load generator ran on
}

// Run is one whole benchmark run.
type Run struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Quick    bool          `json:"quick"`
	Machine  Machine       `json:"machine"`
	Floors   Floors        `json:"floors"`
	Results  []load.Result `json:"results"`
}
