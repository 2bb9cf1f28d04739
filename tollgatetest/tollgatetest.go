// Package tollgatetest runs a real single-node tollgate (Raft, disk, HTTP on
// loopback) inside a test, for tests in tollgate and in users' code:
//
//	c := tollgatetest.Start(t)
//	c.Budgets.CreateBudget(ctx, ...)
package tollgatetest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate/tollgate/client"
	"github.com/tollgate/tollgate/embed"
	"github.com/tollgate/tollgate/transport"
)

// startTimeoutMax bounds how long a node may take to become leader.
const startTimeoutMax = 20 * time.Second

// Options tune StartServer. The zero value is a fresh node in t.TempDir().
type Options struct {
	// DataDir reuses a data directory (to test restarts); default a new
	// t.TempDir().
	DataDir string
	// NodeID defaults to "test-node".
	NodeID string
	// SnapshotThreshold overrides the node's (small values force snapshots).
	SnapshotThreshold uint64
	// Clock overrides the leader's clock.
	Clock func() time.Time
	// Logger defaults to discarding output.
	Logger *slog.Logger
	// Auth turns authentication on (see embed.Config.Auth); APIRateLimit
	// limits each credential.
	Auth         transport.Authenticator
	APIRateLimit transport.RateLimit
}

// Start starts a node in a temporary directory and returns a connected
// client. The node stops when the test ends.
func Start(t testing.TB) *client.Client {
	t.Helper()
	s := StartServer(t, Options{})
	return NewClient(t, s)
}

// StartServer starts a node and waits until it is a leader ready to serve.
// It is closed at the end of the test (closing it earlier is fine).
func StartServer(t testing.TB, opts Options) *embed.Server {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.NodeID == "" {
		opts.NodeID = "test-node"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := embed.Start(embed.Config{
		NodeID:            opts.NodeID,
		DataDir:           opts.DataDir,
		APIAddr:           "127.0.0.1:0",
		RaftAddr:          "127.0.0.1:0",
		Bootstrap:         true,
		SnapshotThreshold: opts.SnapshotThreshold,
		Clock:             opts.Clock,
		// One node on loopback: no reason to wait a second for the first
		// election.
		ElectionTimeout: 150 * time.Millisecond,
		Logger:          opts.Logger,
		Version:         "test",
		Auth:            opts.Auth,
		APIRateLimit:    opts.APIRateLimit,
	})
	if err != nil {
		t.Fatalf("tollgatetest: start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeoutMax)
	defer cancel()
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatalf("tollgatetest: %v", err)
	}
	return s
}

// NewClient returns a client for s, closed at the end of the test.
func NewClient(t testing.TB, s *embed.Server, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New([]string{s.APIAddr()}, opts...)
	if err != nil {
		t.Fatalf("tollgatetest: client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
