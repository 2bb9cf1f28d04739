package deploy_test

// TestComposeCluster builds the image from this tree, starts compose.yaml
// under its own project name, network and host ports, waits for three voters
// and a leader, and spends through one node and reads through another. It
// needs Docker and Compose and fails, not skips, without them: the
// deployment is part of what `make test` checks.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/test/procs"
)

const (
	// clusterReadyTimeout bounds the wait for 3 voters and a leader after
	// `compose up` (a fresh cluster needs about 2s).
	clusterReadyTimeout = 60 * time.Second
	// requestTimeout bounds one HTTP call; writeRetryTimeout bounds the
	// retries of a write while the new leader commits its first entry.
	requestTimeout    = 5 * time.Second
	writeRetryTimeout = 20 * time.Second
	pollInterval      = 250 * time.Millisecond
	// commandTimeout bounds one docker, compose or go command.
	commandTimeout = 3 * time.Minute
	// teardownStopSeconds: the test's data is thrown away, so containers
	// need not drain for the whole stop_grace_period.
	teardownStopSeconds = "5"
)

func TestComposeCluster(t *testing.T) {
	compose := composeCommand(t)
	image := fmt.Sprintf("tollgate:test-%d", os.Getpid())
	buildImage(t, image)

	ports := freePorts(t, 3)
	env := []string{
		"TOLLGATE_IMAGE=" + image,
		"TOLLGATE_NET_PREFIX=" + freeNetPrefix(t),
		"TOLLGATE_N1_PORT=" + ports[0],
		"TOLLGATE_N2_PORT=" + ports[1],
		"TOLLGATE_N3_PORT=" + ports[2],
	}
	project := fmt.Sprintf("tollgatetest%d", os.Getpid())
	cluster := func(args ...string) []string {
		return append(append(append([]string{}, compose...), "-p", project, "-f", "compose.yaml"), args...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := run(env, cluster("logs", "--no-color", "--tail", "40")...)
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := run(env, cluster("down", "-v", "--timeout", teardownStopSeconds)...); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	if out, err := run(env, cluster("up", "-d")...); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}

	n1, n2, n3 := "127.0.0.1:"+ports[0], "127.0.0.1:"+ports[1], "127.0.0.1:"+ports[2]
	waitForLeader(t, n1)

	mustPostEventually(t, n1, "BudgetService/CreateBudget", `{"tenant":"acme","requestId":"deploy-test-create",
		"budget":{"id":"llm","amount":"100","currency":"USD","period":"PERIOD_NONE","enforcement":"ENFORCEMENT_HARD"}}`)
	consumed := mustPostEventually(t, n2, "BudgetService/Consume",
		`{"tenant":"acme","budgetId":"llm","amount":"30","requestId":"deploy-test-consume"}`)
	if consumed["allowed"] != true || consumed["remaining"] != "70.00" {
		t.Fatalf("consume through n2: want allowed with 70.00 remaining, got %v", consumed)
	}
	read := mustPost(t, n3, "BudgetService/GetBudget",
		`{"tenant":"acme","budgetId":"llm","consistency":"CONSISTENCY_LINEARIZABLE"}`)
	readInfo, _ := read["readInfo"].(map[string]any)
	if read["spent"] != "30.00" || read["remaining"] != "70.00" || readInfo["consistency"] != "CONSISTENCY_LINEARIZABLE" {
		t.Fatalf("linearizable read through n3: want spent 30.00, remaining 70.00, got %v", read)
	}
}

// composeCommand returns `docker compose` when the v2 plugin is installed,
// else `docker-compose`, and fails the test when Docker or both are missing.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if out, err := run(nil, "docker", "version"); err != nil {
		t.Fatalf("this test needs Docker (a running daemon and the docker CLI): `docker version`: %v\n%s", err, out)
	}
	if _, err := run(nil, "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	if out, err := run(nil, "docker-compose", "version"); err != nil {
		t.Fatalf("this test needs Docker Compose: neither `docker compose` nor `docker-compose` works: %v\n%s", err, out)
	}
	return []string{"docker-compose"}
}

// buildImage builds a static linux binary from this tree and the image
// around it, from a context holding only what the Dockerfile copies (as
// `make image` does), and removes the image at the end of the test.
func buildImage(t *testing.T, image string) {
	t.Helper()
	buildContext := t.TempDir()
	if err := os.Mkdir(filepath.Join(buildContext, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	goBuild := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=deploy-test",
		"-o", filepath.Join(buildContext, "tollgate"), "./cmd/tollgate")
	goBuild.Dir = ".."
	goBuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := goBuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := run(nil, "docker", "build", "-q", "-t", image, "-f", "Dockerfile", buildContext); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := run(nil, "docker", "rmi", image); err != nil {
			t.Errorf("docker rmi %s: %v\n%s", image, err, out)
		}
	})
}

// run runs a command with extra environment, bounded by commandTimeout.
func run(env []string, name ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name[0], name[1:]...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// freePorts returns n distinct free TCP ports on the loopback interface.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	ports := make([]string, n)
	for i := range ports {
		ports[i] = strconv.Itoa(procs.FreePort(t)) // reserved until the test ends, so the n ports differ
	}
	return ports
}

// freeNetPrefix returns the first three octets of a /24 that overlaps no
// Docker network on this host (compose.yaml pins the nodes' IPs in it).
func freeNetPrefix(t *testing.T) string {
	t.Helper()
	out, err := run(nil, "sh", "-c",
		`docker network inspect $(docker network ls -q) --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}'`)
	if err != nil {
		t.Fatalf("listing Docker networks: %v\n%s", err, out)
	}
	var taken []*net.IPNet
	for _, field := range strings.Fields(string(out)) {
		if _, subnet, err := net.ParseCIDR(field); err == nil {
			taken = append(taken, subnet)
		}
	}
	// Start at a pid-dependent /24 so concurrent runs rarely race for one.
	offset := os.Getpid() % 150
	for second := 30; second >= 16; second-- {
		for i := range 150 {
			prefix := fmt.Sprintf("172.%d.%d", second, 100+(offset+i)%150)
			_, candidate, _ := net.ParseCIDR(prefix + ".0/24")
			if !overlapsAny(candidate, taken) {
				return prefix
			}
		}
	}
	t.Fatalf("no free /24 in 172.16.0.0/12 for the test network; Docker networks: %s", out)
	return ""
}

func overlapsAny(subnet *net.IPNet, taken []*net.IPNet) bool {
	for _, other := range taken {
		if other.Contains(subnet.IP) || subnet.Contains(other.IP) {
			return true
		}
	}
	return false
}

type clusterStatus struct {
	LeaderID string `json:"leaderId"`
	Members  []struct {
		ID        string `json:"id"`
		Suffrage  string `json:"suffrage"`
		Leader    bool   `json:"leader"`
		Reachable bool   `json:"reachable"`
	} `json:"members"`
}

// waitForLeader polls ClusterService/Status on addr until it reports three
// reachable voters, exactly one of them the leader.
func waitForLeader(t *testing.T, addr string) {
	t.Helper()
	var last string
	ready := poll(clusterReadyTimeout, func() bool {
		code, body := post(addr, "ClusterService/Status", `{"includeProgress":true}`)
		last = fmt.Sprintf("HTTP %d %s", code, body)
		var st clusterStatus
		if code != http.StatusOK || json.Unmarshal(body, &st) != nil || len(st.Members) != 3 {
			return false
		}
		leaders := 0
		for _, m := range st.Members {
			if m.Suffrage != "Voter" || !m.Reachable {
				return false
			}
			if m.Leader {
				leaders++
				if m.ID != st.LeaderID {
					return false
				}
			}
		}
		return leaders == 1
	})
	if !ready {
		t.Fatalf("no leader with 3 reachable voters within %s; last status from %s: %s", clusterReadyTimeout, addr, last)
	}
}

// poll checks cond every pollInterval until it holds or timeout passes.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
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

var httpClient = &http.Client{Timeout: requestTimeout}

// post sends a JSON request to procedure (e.g. "BudgetService/Consume") on
// addr; code is 0 when no HTTP answer came.
func post(addr, procedure, body string) (code int, reply []byte) {
	resp, err := httpClient.Post("http://"+addr+"/tollgate.v1."+procedure, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func mustPost(t *testing.T, addr, procedure, body string) map[string]any {
	t.Helper()
	code, reply := post(addr, procedure, body)
	var out map[string]any
	if code != http.StatusOK || json.Unmarshal(reply, &out) != nil {
		t.Fatalf("%s on %s: HTTP %d %s", procedure, addr, code, reply)
	}
	return out
}

// mustPostEventually retries an idempotent write (it carries a requestId)
// while there is no answer or it is Unavailable (HTTP 503): a new leader
// refuses writes until its first entry commits.
func mustPostEventually(t *testing.T, addr, procedure, body string) map[string]any {
	t.Helper()
	var code int
	var reply []byte
	poll(writeRetryTimeout, func() bool {
		code, reply = post(addr, procedure, body)
		return code != 0 && code != http.StatusServiceUnavailable
	})
	var out map[string]any
	if code != http.StatusOK || json.Unmarshal(reply, &out) != nil {
		t.Fatalf("%s on %s: HTTP %d %s", procedure, addr, code, reply)
	}
	return out
}
