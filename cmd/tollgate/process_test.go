package main

// Tests against the real binary in real processes: kill -9, restart on the
// same data dir, graceful shutdown. They talk JSON over HTTP like curl.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/test/procs"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// tollgateBinary builds the binary once per test run.
func tollgateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tollgate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "tollgate")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freePort is a reserved free loopback address (see procs.FreePort).
func freePort(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(procs.FreePort(t)))
}

type proc struct {
	cmd     *exec.Cmd
	apiAddr string
	done    chan error
}

// startProc runs `tollgate serve` and waits until it prints its API address
// and its node is a ready leader.
func startProc(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(tollgateBinary(t), append([]string{"serve", "--insecure", "--api-addr", "127.0.0.1:0", "--log-level", "warn"}, args...)...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "API" {
				addrCh <- strings.TrimPrefix(f[1], "http://")
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.kill() })
	select {
	case p.apiAddr = <-addrCh:
	case err := <-p.done:
		t.Fatalf("tollgate serve exited early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("tollgate serve did not print its API address")
	}
	p.waitReady(t)
	return p
}

// poll checks cond every interval until it holds or timeout passes.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// waitReady polls a linearizable read until the node serves it.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	ready := poll(30*time.Second, 20*time.Millisecond, func() bool {
		code, _ := p.post(t, "BudgetService/ListBudgets", `{"tenant":"probe"}`)
		return code == http.StatusOK
	})
	if !ready {
		t.Fatal("node did not become ready")
	}
}

func (p *proc) post(t *testing.T, procedure, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+p.apiAddr+"/tollgate.v1."+procedure, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (p *proc) mustPost(t *testing.T, procedure, body string) map[string]any {
	t.Helper()
	code, out := p.post(t, procedure, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d %v", procedure, body, code, out)
	}
	return out
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	}
}

// stop sends SIGTERM and returns the exit error.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("tollgate did not stop on SIGTERM")
		return nil
	}
}

func nodeArgs(dir, raftAddr string, extra ...string) []string {
	return append([]string{"--node-id", "p1", "--data-dir", filepath.Join(dir, "data"), "--raft-addr", raftAddr}, extra...)
}

func stateHash(t *testing.T, p *proc) (string, string) {
	t.Helper()
	st := p.mustPost(t, "ClusterService/Status", `{"includeStateHash":true}`)
	return st["stateHash"].(string), fmt.Sprint(st["appliedIndex"])
}

// TestSIGKILLKeepsAcknowledgedConsumes: consumes acknowledged before kill -9
// are all there after a restart; consumes in flight at the kill are each
// charged at most once, and retrying them with their request_id settles them
// exactly once.
func TestSIGKILLKeepsAcknowledgedConsumes(t *testing.T) {
	dir, raftAddr := t.TempDir(), freePort(t)
	p := startProc(t, dir, nodeArgs(dir, raftAddr)...)
	p.mustPost(t, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"llm","amount":"100000","currency":"USD"}}`)

	const workers = 16
	var mu sync.Mutex
	acked, sent := map[string]bool{}, map[string]bool{}
	var wg sync.WaitGroup
	stopAt := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopAt:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				mu.Lock()
				sent[id] = true
				mu.Unlock()
				code, out := p.post(t, "BudgetService/Consume", fmt.Sprintf(`{"tenant":"acme","budgetId":"llm","amount":"1.25","requestId":%q}`, id))
				if code != http.StatusOK {
					return // the process is gone: outcome unknown
				}
				if out["allowed"] != true {
					t.Errorf("consume %s denied: %v", id, out)
					return
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	// Let some consumes be acknowledged, then kill -9 with others in flight.
	if !poll(20*time.Second, 5*time.Millisecond, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 300
	}) {
		t.Fatal("fewer than 300 consumes acknowledged in 20s")
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	close(stopAt)
	wg.Wait()
	<-p.done
	p.done <- nil

	p2 := startProc(t, dir, nodeArgs(dir, raftAddr)...)
	got := p2.mustPost(t, "BudgetService/GetBudget", `{"tenant":"acme","budgetId":"llm"}`)
	spentMicros := parseMicros(t, got["spent"].(string))
	ackedMicros := int64(len(acked)) * 1_250_000
	ambiguous := int64(len(sent)-len(acked)) * 1_250_000
	if spentMicros < ackedMicros || spentMicros > ackedMicros+ambiguous {
		t.Fatalf("spent %d micros after kill -9; acknowledged %d, ambiguous %d", spentMicros, ackedMicros, ambiguous)
	}
	// Settle every unacknowledged request by retrying it: each is charged
	// exactly once in total.
	for id := range sent {
		if acked[id] {
			continue
		}
		p2.mustPost(t, "BudgetService/Consume", fmt.Sprintf(`{"tenant":"acme","budgetId":"llm","amount":"1.25","requestId":%q}`, id))
	}
	for id := range acked { // and acknowledged ones replay without charging
		p2.mustPost(t, "BudgetService/Consume", fmt.Sprintf(`{"tenant":"acme","budgetId":"llm","amount":"1.25","requestId":%q}`, id))
		break
	}
	got = p2.mustPost(t, "BudgetService/GetBudget", `{"tenant":"acme","budgetId":"llm"}`)
	if want := int64(len(sent)) * 1_250_000; parseMicros(t, got["spent"].(string)) != want {
		t.Fatalf("spent %s after settling every request, want %d micros (%d requests, %d acknowledged)", got["spent"], want, len(sent), len(acked))
	}
	t.Logf("%d acknowledged, %d in flight at kill -9", len(acked), len(sent)-len(acked))
}

func parseMicros(t *testing.T, s string) int64 {
	t.Helper()
	units, frac, _ := strings.Cut(s, ".")
	frac = (frac + "000000")[:6]
	var u, f int64
	if _, err := fmt.Sscan(units, &u); err != nil {
		t.Fatalf("amount %q: %v", s, err)
	}
	fmt.Sscan(frac, &f)
	return u*1_000_000 + f
}

// TestIdempotencyAcrossRestart: the same request_id after a restart returns
// the same reply and charges once.
func TestIdempotencyAcrossRestart(t *testing.T) {
	dir, raftAddr := t.TempDir(), freePort(t)
	p := startProc(t, dir, nodeArgs(dir, raftAddr)...)
	p.mustPost(t, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"llm","amount":"10","currency":"USD"}}`)
	first := p.mustPost(t, "BudgetService/Consume", `{"tenant":"acme","budgetId":"llm","amount":"0.0125","requestId":"r-1"}`)
	if err := p.stop(t); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}

	p2 := startProc(t, dir, nodeArgs(dir, raftAddr)...)
	again := p2.mustPost(t, "BudgetService/Consume", `{"tenant":"acme","budgetId":"llm","amount":"0.0125","requestId":"r-1"}`)
	a, _ := json.Marshal(first)
	b, _ := json.Marshal(again)
	if string(a) != string(b) {
		t.Errorf("reply after restart %s, first reply %s", b, a)
	}
	got := p2.mustPost(t, "BudgetService/GetBudget", `{"tenant":"acme","budgetId":"llm"}`)
	if got["spent"] != "0.0125" {
		t.Errorf("spent %v, want 0.0125 (charged once)", got["spent"])
	}
}

// TestSnapshotRestartSameStateHash: with snapshots every few entries, a
// restart (graceful and kill -9) restores a state with the same hash.
func TestSnapshotRestartSameStateHash(t *testing.T) {
	dir, raftAddr := t.TempDir(), freePort(t)
	args := nodeArgs(dir, raftAddr, "--snapshot-threshold", "16", "--snapshot-interval", "20ms")
	p := startProc(t, dir, args...)
	p.mustPost(t, "BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"llm","amount":"1000","currency":"USD","period":"PERIOD_DAY","timezone":"America/New_York","thresholdsPercent":[1,2]}}`)
	p.mustPost(t, "RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"p","algorithm":"ALGORITHM_FIXED_WINDOW","limit":"1000","window":"24h"}}`)
	for i := 0; i < 120; i++ {
		p.mustPost(t, "BudgetService/Consume", fmt.Sprintf(`{"tenant":"acme","budgetId":"llm","amount":"0.10","requestId":"c-%d"}`, i))
		p.mustPost(t, "RateLimitService/Check", fmt.Sprintf(`{"tenant":"acme","policyId":"p","key":"k-%d"}`, i%7))
	}
	before, _ := stateHash(t, p)
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "data", "snapshots", "*", "state.bin"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot was written with --snapshot-threshold 16")
	}

	p2 := startProc(t, dir, args...)
	if after, _ := stateHash(t, p2); after != before {
		t.Fatalf("state hash after graceful restart %s, before %s", after, before)
	}
	p2.cmd.Process.Signal(syscall.SIGKILL)
	<-p2.done
	p2.done <- nil
	p3 := startProc(t, dir, args...)
	if after, _ := stateHash(t, p3); after != before {
		t.Fatalf("state hash after kill -9 and restart %s, before %s", after, before)
	}
}

// TestServeDev: --dev keeps data in ./data and says loudly that there is no
// authentication; SIGTERM stops it cleanly.
func TestServeDev(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(tollgateBinary(t), "serve", "--dev", "--api-addr", "127.0.0.1:0", "--raft-addr", freePort(t), "--log-level", "warn")
	cmd.Dir = dir
	var out strings.Builder
	var mu sync.Mutex
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for seenAPI := false; !seenAPI; {
		select {
		case l := <-lines:
			seenAPI = strings.Contains(l, "API   http://127.0.0.1:")
		case <-deadline:
			t.Fatal("no API line")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "raft.db")); err != nil {
		t.Errorf("dev mode did not create ./data/raft.db (the Raft log): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd.Process.Signal(syscall.SIGTERM)
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-ctx.Done():
		cmd.Process.Kill()
		t.Fatal("no exit after SIGTERM")
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(out.String(), "NO AUTHENTICATION") || !strings.Contains(out.String(), `"dev"`) ||
		!strings.Contains(out.String(), "WARNING: AUTHENTICATION IS OFF (--dev): anyone who reaches") {
		t.Errorf("dev banner does not say it is a dev node without auth:\n%s", out.String())
	}
}

// TestServeRefusesWithoutAuth: outside --dev a node does not start without
// authentication unless told --insecure, and half-configured auth is a
// clear error, before anything listens.
func TestServeRefusesWithoutAuth(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "cluster.token")
	if r := runCLI(t, "keygen", "--cluster-token", "--out", token); r.code != 0 {
		t.Fatalf("keygen --cluster-token: %d %s", r.code, r.stderr)
	}
	jwks := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwks, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`), 0o600)
	base := []string{"serve", "--node-id", "n1", "--data-dir", filepath.Join(dir, "d"), "--api-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", ""}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "refusing to start without authentication"},
		{[]string{"--insecure", "--auth-jwt-key-file", jwks}, "--insecure turns authentication off, but JWT keys are configured"},
		{[]string{"--auth-jwt-issuer", "i"}, "need --auth-jwt-key-file or --auth-jwks-url"},
		{[]string{"--auth-jwt-key-file", jwks, "--auth-jwt-issuer", "i", "--auth-jwt-audience", "a"}, "authentication needs --cluster-token-file"},
		{[]string{"--auth-jwt-key-file", jwks, "--cluster-token-file", token}, "JWT needs an issuer and an audience"},
		{[]string{"--auth-jwt-key-file", filepath.Join(dir, "missing.json"), "--auth-jwt-issuer", "i", "--auth-jwt-audience", "a", "--cluster-token-file", token}, "missing.json"},
		{[]string{"--insecure", "--cluster-token-file", jwks}, "want the base64 of 32 bytes"},
	} {
		r := runCLI(t, append(append([]string{}, base...), tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want it to say %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
		t.Errorf("a refused start created its data dir")
	}
}
