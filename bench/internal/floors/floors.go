// Package floors measures the physical limits a decision service sits on:
// an fdatasync on the data disk, a loopback round trip, and a no-op RPC
// through the same HTTP/2 + Connect stack tollgate uses.
package floors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/tollgate/tollgate/bench/internal/proc"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/gen/tollgate/v1/tollgatev1connect"
)

// Latency is a distribution's median and 99th percentile in microseconds.
type Latency struct{ P50us, P99us float64 }

func summarize(h *hdrhistogram.Histogram) Latency {
	return Latency{float64(h.ValueAtQuantile(50)), float64(h.ValueAtQuantile(99))}
}

// Fsync writes 4 KiB at the start of a file in dir and fdatasyncs it, n
// times: what one durable log append costs at least.
func Fsync(dir string, n int) (Latency, error) {
	f, err := os.OpenFile(filepath.Join(dir, "fsync-floor"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return Latency{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	h := hdrhistogram.New(1, 10_000_000, 3)
	for i := range n {
		buf[0] = byte(i)
		t0 := time.Now()
		if _, err := f.WriteAt(buf, int64(i%64)*4096); err != nil {
			return Latency{}, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return Latency{}, err
		}
		h.RecordValue(time.Since(t0).Microseconds())
	}
	return summarize(h), nil
}

// LoopbackRTT measures n 1-byte TCP ping-pongs over 127.0.0.1.
func LoopbackRTT(n int) (Latency, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Latency{}, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return Latency{}, err
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	b := []byte{1}
	h := hdrhistogram.New(1, 10_000_000, 3)
	for range n {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return Latency{}, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return Latency{}, err
		}
		h.RecordValue(max(1, time.Since(t0).Microseconds()))
	}
	return summarize(h), nil
}

// noopCluster answers ClusterService/Status with an empty message at once.
type noopCluster struct {
	tollgatev1connect.UnimplementedClusterServiceHandler
}

func (noopCluster) Status(context.Context, *connect.Request[tollgatev1.StatusRequest]) (*connect.Response[tollgatev1.StatusResponse], error) {
	return connect.NewResponse(&tollgatev1.StatusResponse{}), nil
}

// NoopChildMain serves the no-op handler on args[0] (host:port), h2c, until
// SIGTERM: `tgbench child noop ADDR`.
func NoopChildMain(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: tgbench child noop HOST:PORT")
	}
	mux := http.NewServeMux()
	mux.Handle(tollgatev1connect.NewClusterServiceHandler(noopCluster{}))
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Addr: args[0], Handler: mux, Protocols: protocols}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NoopRPC starts the no-op server pinned like the systems and measures its
// median latency at 1 client and its requests/s at `clients` concurrent
// clients for d.
func NoopRPC(ctx context.Context, o proc.Options, clients int, d time.Duration) (p50us, perSecond float64, err error) {
	port, err := proc.FreePort()
	if err != nil {
		return 0, 0, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd, err := proc.StartChild(o, "noop", addr)
	if err != nil {
		return 0, 0, err
	}
	defer cmd.Stop()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := proc.WaitTCP(wctx, addr); err != nil {
		return 0, 0, err
	}
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: protocols, MaxIdleConnsPerHost: 16}}
	newClient := func() tollgatev1connect.ClusterServiceClient {
		return tollgatev1connect.NewClusterServiceClient(hc, "http://"+addr)
	}
	call := func(c tollgatev1connect.ClusterServiceClient) error {
		_, err := c.Status(ctx, connect.NewRequest(&tollgatev1.StatusRequest{}))
		return err
	}
	one := newClient()
	h := hdrhistogram.New(1, 10_000_000, 3)
	for range 2000 {
		t0 := time.Now()
		if err := call(one); err != nil {
			return 0, 0, err
		}
		h.RecordValue(max(1, time.Since(t0).Microseconds()))
	}
	var mu sync.Mutex
	var total int64
	var firstErr error
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			c := newClient()
			var n int64
			for time.Now().Before(deadline) {
				if err := call(c); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				n++
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	return float64(h.ValueAtQuantile(50)), float64(total) / time.Since(start).Seconds(), nil
}
