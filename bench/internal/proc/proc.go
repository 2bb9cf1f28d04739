// Package proc starts the benchmark's server processes pinned to the server
// CPUs, and reads their CPU time.
package proc

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options are what every system needs to start its servers.
type Options struct {
	// Self is the path of the tgbench binary: systems that run in-process
	// Go servers (etcd embed, gubernator) start it again as
	// `tgbench child <system> ARGS...` so the servers are separate,
	// pinned processes.
	Self string
	// Tollgate is the path of the tollgate binary.
	Tollgate string
	// Dir is a fresh directory for the system's data (on the data disk).
	Dir string
	// ServerCPUs is the taskset CPU list servers run on (e.g. "1"); the
	// load generator runs on the others. Empty: no pinning.
	ServerCPUs string
	// Log receives the servers' output (nil: discarded).
	Log io.Writer
}

// Cmd is a running server process.
type Cmd struct {
	*exec.Cmd
	done chan struct{}
}

// Start runs name with args pinned to o.ServerCPUs.
func Start(o Options, name string, args ...string) (*Cmd, error) {
	if o.ServerCPUs != "" {
		args = append([]string{"-c", o.ServerCPUs, name}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if o.Log == nil {
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	}
	// A process group of its own, so Stop reaches every child it forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Cmd{Cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	return c, nil
}

// StartChild runs `Self child system args...` pinned like Start.
func StartChild(o Options, system string, args ...string) (*Cmd, error) {
	return Start(o, o.Self, append([]string{"child", system}, args...)...)
}

// Stop sends SIGTERM to the process group and waits up to 10 s, then kills.
func (c *Cmd) Stop() {
	syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// Exited reports whether the process has ended.
func (c *Cmd) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// CPUSeconds is the user+system CPU time a process (and its reaped
// children) used so far, from /proc/PID/stat.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var ticks float64
	for _, k := range []int{11, 12, 13, 14} {
		v, err := strconv.ParseFloat(f[k], 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return ticks / 100, nil // USER_HZ is 100 on Linux
}

// TotalCPUSeconds sums CPUSeconds over pids (a process that is gone counts 0).
func TotalCPUSeconds(pids []int) float64 {
	var t float64
	for _, p := range pids {
		if s, err := CPUSeconds(p); err == nil {
			t += s
		}
	}
	return t
}

// FreePort returns a TCP port free on 127.0.0.1 right now, drawn at random
// below the kernel's ephemeral range when it can: there no ":0" listener
// and no client connection takes it between this check and the server's
// bind (the ephemeral range is where such races happen).
func FreePort() (int, error) {
	if low, high := belowEphemeral(); low > 0 {
		for range 200 {
			port := low + rand.IntN(high-low+1)
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				ln.Close()
				return port, nil
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// belowEphemeral is [10000, start of the ephemeral range), or zeros when
// the range cannot be read or leaves too little room.
func belowEphemeral() (int, int) {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(raw))
	if len(f) != 2 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first-1 < 11000 {
		return 0, 0
	}
	return 10000, first - 1
}

// WaitTCP polls until addr accepts connections or ctx ends.
func WaitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not accept connections: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
