package jepsen

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/test/procs"
)

// Step is one scheduled fault.
type Step struct {
	Kind FaultKind
	// Gap is the quiet time before the fault; Hold how long it stays.
	Gap, Hold time.Duration
	// Offset is the --clock-offset of a clock-offset fault.
	Offset time.Duration
	// Mandatory steps run even past Duration (every kind of Config.Faults
	// once); the others only while Duration lasts.
	Mandatory bool
}

func (s Step) String() string {
	str := fmt.Sprintf("gap %-5s hold %-5s %s", s.Gap.Round(100*time.Millisecond), s.Hold.Round(100*time.Millisecond), s.Kind)
	if s.Kind == FaultClockOffset {
		str += " " + s.Offset.String()
	}
	if !s.Mandatory {
		str += " (if time allows)"
	}
	return str
}

// overhead is a rough planning figure for what a fault costs beyond its
// hold (restarts, catch-up, waiting for voters).
var overhead = map[FaultKind]time.Duration{
	FaultKillOne: time.Second, FaultKillLeader: time.Second, FaultKillMajority: 2 * time.Second, FaultKillAll: 2 * time.Second,
	FaultAddNode: 3 * time.Second, FaultRemoveFollower: 3 * time.Second, FaultRemoveLeader: 3 * time.Second,
	FaultSnapshotLag: 4 * time.Second, FaultSnapshotKill: 2 * time.Second, FaultClockOffset: 4 * time.Second,
	FaultOneWay: 2 * time.Second, FaultIsolateSlowLeader: 5 * time.Second,
}

// stepsMax bounds a schedule's length.
const stepsMax = 1000

// NewSchedule draws the fault schedule from the seed: every kind of
// cfg.Faults once in a random order, then random kinds, run while
// cfg.Duration lasts. Targets (which node) are drawn when a
// fault is injected, from the same seed, since they depend on who leads.
func NewSchedule(cfg Config) []Step {
	rnd := rand.New(rand.NewSource(cfg.Seed))
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rnd.Int63n(int64(hi-lo)))
	}
	step := func(kind FaultKind, mandatory bool) Step {
		s := Step{Kind: kind, Gap: between(cfg.GapMin, cfg.GapMax), Hold: between(cfg.FaultMin, cfg.FaultMax), Mandatory: mandatory}
		switch kind {
		case FaultPause, FaultPauseLeader:
			// Longer than an election: the others must move on.
			s.Hold = max(s.Hold, 4*cfg.ElectionTimeout)
		case FaultIsolateSlowLeader:
			// Until the slow leader's lease has run out.
			s.Hold = max(s.Hold, (slowLeaderFactor/2+2)*cfg.ElectionTimeout)
		}
		if kind == FaultClockOffset {
			s.Offset = between(time.Minute, max(cfg.ClockOffsetMax, time.Minute)).Round(time.Second)
			if rnd.Intn(2) == 0 {
				s.Offset = -s.Offset
			}
		}
		return s
	}
	kinds := slices.Clone(cfg.Faults)
	rnd.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	var steps []Step
	var planned time.Duration
	for _, k := range kinds {
		s := step(k, true)
		steps = append(steps, s)
		planned += s.Gap + s.Hold + overhead[k]
	}
	// More than fit, so that faults keep coming until Duration ends
	// (the planning figures are rough); the run skips the rest.
	for planned < 2*cfg.Duration && len(steps) < stepsMax && len(cfg.Faults) > 0 {
		s := step(cfg.Faults[rnd.Intn(len(cfg.Faults))], false)
		steps = append(steps, s)
		planned += s.Gap + s.Hold + overhead[s.Kind]
	}
	return steps
}

// FaultRecord is what a fault did, for the summary and the faults check.
type FaultRecord struct {
	Step    int
	Kind    FaultKind
	Targets []string
	// Start and End are on the history's clock (since the run began).
	Start, End time.Duration
	// Verified: the fault was observed to take effect (a cut refuses TCP,
	// a kill landed during a snapshot, a lagging follower installed a
	// snapshot, the offset leader stamped the log...).
	Verified bool
	Detail   string
	// Err: the fault could not be injected or verified.
	Err string
}

func (f FaultRecord) String() string {
	s := fmt.Sprintf("#%d %s %s at %+.2fs..%+.2fs", f.Step, f.Kind, strings.Join(f.Targets, ","), f.Start.Seconds(), f.End.Seconds())
	switch {
	case f.Err != "":
		s += ": ERROR " + f.Err
	case f.Verified:
		s += ": verified"
	default:
		s += ": not verified"
	}
	if f.Detail != "" {
		s += " — " + f.Detail
	}
	return s
}

func (f *FaultRecord) note(format string, args ...any) {
	if f.Detail != "" {
		f.Detail += "; "
	}
	f.Detail += fmt.Sprintf(format, args...)
}

func (f *FaultRecord) fail(format string, args ...any) {
	if f.Err != "" {
		f.Err += "; "
	}
	f.Err += fmt.Sprintf(format, args...)
}

// nemesis injects the scheduled faults, one at a time, from the test's
// goroutine (procs fails the test from there only).
type nemesis struct {
	t     testing.TB
	cfg   Config
	c     *procs.Cluster
	v     *view
	rnd   *rand.Rand
	clock func() time.Duration

	faults   []FaultRecord
	liveness []string
}

func newNemesis(t testing.TB, cfg Config, c *procs.Cluster, v *view, clock func() time.Duration) *nemesis {
	return &nemesis{t: t, cfg: cfg, c: c, v: v, clock: clock, rnd: rand.New(rand.NewSource(cfg.Seed + 1))}
}

// wait blocks for d on a timer (the schedule's time, not synchronisation).
func wait(d time.Duration) {
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// run injects the steps until they are done (optional ones only until
// end), then waits for end.
func (n *nemesis) run(steps []Step, end time.Time) {
	for i, s := range steps {
		if !s.Mandatory && time.Now().After(end) {
			break
		}
		wait(s.Gap)
		if err := n.v.waitHealthy(n.cfg.HealthTimeout); err != nil {
			n.liveness = append(n.liveness, fmt.Sprintf("before fault #%d (%s) at %+.1fs: %v", i+1, s.Kind, n.clock().Seconds(), err))
			return
		}
		n.inject(i+1, s)
	}
	wait(time.Until(end))
}

func (n *nemesis) inject(no int, s Step) {
	fr := FaultRecord{Step: no, Kind: s.Kind, Start: n.clock()}
	if undo := n.start(s, &fr); undo != nil {
		switch s.Kind {
		case FaultPause, FaultPauseLeader, FaultIsolateSlowLeader:
			// These observe the cluster while they hold.
		default:
			wait(s.Hold)
		}
		undo()
	}
	fr.End = n.clock()
	n.faults = append(n.faults, fr)
	n.t.Logf("fault %s", fr)
}

func (n *nemesis) pick(nodes []*procs.Node) *procs.Node { return nodes[n.rnd.Intn(len(nodes))] }

func (n *nemesis) shuffled(nodes []*procs.Node) []*procs.Node {
	out := slices.Clone(nodes)
	n.rnd.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// start injects one fault and returns what undoes it (nil when there is
// nothing to undo or it could not be injected).
func (n *nemesis) start(s Step, fr *FaultRecord) func() {
	ctx := context.Background()
	members := n.v.memberList()
	leader, _ := n.v.leader(ctx, members)
	if leader == nil {
		leader = n.pick(members) // it just was healthy; a leader change is under way
	}
	followers := without(members, leader)
	switch s.Kind {
	case FaultIsolate, FaultIsolateLeader:
		target := leader
		if s.Kind == FaultIsolate {
			target = n.pick(members)
		}
		return n.partition(fr, members, [][]*procs.Node{{target}, without(members, target)})
	case FaultIsolateSlowLeader:
		return n.slowLeader(fr, members, n.pick(followers), s.Hold)
	case FaultHalves:
		m := n.shuffled(members)
		return n.partition(fr, members, [][]*procs.Node{m[:len(m)/2], m[len(m)/2:]})
	case FaultRing:
		return n.ring(fr, n.shuffled(members))
	case FaultBridge:
		m := n.shuffled(members)
		k := (len(m) - 1) / 2
		fr.note("%s bridges the halves", m[k].ID)
		return n.partition(fr, members, [][]*procs.Node{m[:k], m[k+1:]})
	case FaultOneWay:
		target := n.pick(members)
		if n.rnd.Intn(2) == 0 {
			target = leader
		}
		return n.oneWay(fr, members, target)
	case FaultKillOne:
		return n.kill(fr, n.pick(members))
	case FaultKillLeader:
		return n.kill(fr, leader)
	case FaultKillMajority:
		return n.kill(fr, n.shuffled(members)[:len(members)/2+1]...)
	case FaultKillAll:
		return n.kill(fr, members...)
	case FaultPause:
		return n.pause(fr, s.Hold, members, n.pick(members), leader)
	case FaultPauseLeader:
		return n.pause(fr, s.Hold, members, leader, leader)
	case FaultAddNode:
		return n.addNode(fr, members)
	case FaultRemoveFollower:
		return n.remove(fr, members, n.pick(followers), leader)
	case FaultRemoveLeader:
		return n.remove(fr, members, leader, leader)
	case FaultTransfer:
		n.transfer(fr, n.pick(followers))
		return nil
	case FaultSnapshotLag:
		return n.snapshotLag(fr, members, n.pick(followers))
	case FaultSnapshotKill:
		return n.snapshotKill(fr, n.pick(members))
	case FaultClockOffset:
		return n.clockOffset(fr, n.pick(followers), s.Offset)
	}
	fr.fail("unknown fault kind %q", s.Kind)
	return nil
}

// partition cuts every link between nodes of different groups, then
// proves it with TCP probes: across the cut refused, within a group
// through.
func (n *nemesis) partition(fr *FaultRecord, members []*procs.Node, groups [][]*procs.Node) func() {
	var names []string
	for _, g := range groups {
		names = append(names, strings.Join(ids(g), ","))
	}
	fr.Targets = []string{strings.Join(names, " | ")}
	for i, a := range groups {
		for _, b := range groups[i+1:] {
			n.c.Partition(a, b)
		}
	}
	group := map[*procs.Node]int{}
	for i, g := range groups {
		for _, x := range g {
			group[x] = i
		}
	}
	// A member in no group (the bridge) keeps every link.
	n.verifyCut(fr, members, func(x, y *procs.Node) bool {
		gx, okx := group[x]
		gy, oky := group[y]
		return okx && oky && gx != gy
	})
	return n.c.Heal
}

// ring: each node keeps only its two neighbours in the (shuffled) order.
func (n *nemesis) ring(fr *FaultRecord, order []*procs.Node) func() {
	fr.Targets = []string{strings.Join(ids(order), "-") + "-" + order[0].ID}
	pos := map[*procs.Node]int{}
	for i, x := range order {
		pos[x] = i
	}
	cut := func(x, y *procs.Node) bool {
		d := (pos[x] - pos[y] + len(order)) % len(order)
		return d != 1 && d != len(order)-1
	}
	for i, x := range order {
		for _, y := range order[i+1:] {
			if cut(x, y) {
				n.c.Partition([]*procs.Node{x}, []*procs.Node{y})
			}
		}
	}
	n.verifyCut(fr, order, cut)
	return n.c.Heal
}

// verifyCut probes every ordered pair of members at once: pairs with
// cut(x, y) must refuse TCP, the others must connect. A cut that lets
// traffic through fails the run (through the faults check).
func (n *nemesis) verifyCut(fr *FaultRecord, members []*procs.Node, cut func(x, y *procs.Node) bool) {
	type result struct {
		from, to *procs.Node
		cut, ok  bool
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for _, x := range members {
		for _, y := range members {
			if x == y {
				continue
			}
			wg.Go(func() {
				ok := n.c.Reachable(x, y.RaftAddr)
				mu.Lock()
				results = append(results, result{x, y, cut(x, y), ok})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	var leaks, broken []string
	cuts := 0
	for _, r := range results {
		switch {
		case r.cut && r.ok:
			leaks = append(leaks, r.from.ID+"->"+r.to.ID)
		case r.cut:
			cuts++
		case !r.ok:
			broken = append(broken, r.from.ID+"->"+r.to.ID)
		}
	}
	slices.Sort(leaks)
	slices.Sort(broken)
	if len(leaks) > 0 {
		fr.fail("the cut lets TCP through on %v", leaks)
	}
	if len(broken) > 0 {
		fr.fail("links meant to stay up refuse TCP: %v", broken)
	}
	if len(leaks)+len(broken) == 0 {
		fr.Verified = true
		fr.note("TCP probes: %d cut directions refused, %d kept connect", cuts, len(results)-cuts)
	}
}

// slowLeaderFactor: the slow leader's election timeout (and so its lease,
// half of it) over the others'.
const slowLeaderFactor = 16

// slowLeader restarts target with a long election timeout, makes it leader
// and isolates it. Its lease (half its election timeout) outlasts the
// others' election timeout, so they elect a new leader and commit while
// it still believes it leads. The fault is verified when both were seen
// leading at once. When the fault ends it restarts with the usual timeout.
func (n *nemesis) slowLeader(fr *FaultRecord, members []*procs.Node, target *procs.Node, hold time.Duration) func() {
	slow := slowLeaderFactor * n.cfg.ElectionTimeout
	restart := func(timeout time.Duration) {
		n.c.Kill(target)
		target.Args = append(withoutFlag(target.Args, "--election-timeout"), "--election-timeout", timeout.String())
		n.c.Start(target)
	}
	restart(slow)
	undo := func() { restart(n.cfg.ElectionTimeout) }
	if err := n.v.waitHealthy(n.cfg.HealthTimeout); err != nil {
		fr.fail("after restarting %s with --election-timeout %s: %v", target.ID, slow, err)
		return undo
	}
	n.transfer(fr, target)
	if !fr.Verified {
		return undo
	}
	fr.Verified = false
	others := without(members, target)
	n.partition(fr, members, [][]*procs.Node{{target}, others})
	fr.Targets = []string{target.ID}
	if fr.Err != "" {
		return func() { n.c.Heal(); undo() }
	}
	fr.Verified = false
	// Watch for the overlap: a new leader among the others while the
	// isolated one still says it leads.
	start := time.Now()
	var overlapAt time.Duration
	var newLeader *procs.Node
	deadline := time.NewTimer(hold)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
watch:
	for overlapAt == 0 {
		select {
		case <-deadline.C:
			break watch
		case <-tick.C:
			l, _ := n.v.leader(context.Background(), others)
			st, err := n.v.status(context.Background(), target, false)
			if l != nil && err == nil && st.State == "Leader" {
				overlapAt, newLeader = time.Since(start), l
			}
		}
	}
	if overlapAt > 0 {
		fr.Verified = true
		fr.note("%s (lease %s) still said it led %s after the cut, when %s already led the others",
			target.ID, slow/2, overlapAt.Round(time.Millisecond), newLeader.ID)
	} else {
		fr.note("no moment seen where %s and a new leader both led", target.ID)
	}
	wait(hold - time.Since(start)) // the rest of the hold
	return func() {
		n.c.Heal()
		undo()
	}
}

// oneWay: target can send but not receive. Probes: nothing reaches it
// from the others; its own packets do reach them.
func (n *nemesis) oneWay(fr *FaultRecord, members []*procs.Node, target *procs.Node) func() {
	fr.Targets = []string{target.ID}
	n.c.OneWay(target)
	peers := without(members, target)
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			in := n.c.Reachable(p, target.RaftAddr)
			_, port, _ := net.SplitHostPort(p.RaftAddr)
			out, err := n.c.Delivers(target, p, port)
			mu.Lock()
			defer mu.Unlock()
			if in {
				problems = append(problems, fmt.Sprintf("%s still reaches %s", p.ID, target.ID))
			}
			if err != nil {
				problems = append(problems, err.Error())
			} else if !out {
				problems = append(problems, fmt.Sprintf("%s's packets no longer reach %s", target.ID, p.ID))
			}
		})
	}
	wg.Wait()
	if len(problems) > 0 {
		slices.Sort(problems)
		fr.fail("one-way drop not as intended: %s", strings.Join(problems, "; "))
	} else {
		fr.Verified = true
		fr.note("probes: %d peers cannot reach it, its packets reach all of them", len(peers))
	}
	return n.c.Heal
}

func (n *nemesis) kill(fr *FaultRecord, targets ...*procs.Node) func() {
	fr.Targets = ids(targets)
	for _, x := range targets {
		n.c.Kill(x)
	}
	fr.Verified = true
	for _, x := range targets {
		if x.Running() {
			fr.Verified = false
			fr.fail("%s still runs after SIGKILL", x.ID)
		}
	}
	return func() {
		for _, x := range targets {
			n.c.Start(x)
		}
	}
}

// pause SIGSTOPs target for hold and watches, when it is the leader, for
// the others to elect a new one meanwhile.
func (n *nemesis) pause(fr *FaultRecord, hold time.Duration, members []*procs.Node, target, leader *procs.Node) func() {
	fr.Targets = []string{target.ID}
	n.c.Pause(target)
	start := time.Now()
	others := without(members, target)
	var elected *procs.Node
	var electedAfter time.Duration
	deadline := time.NewTimer(hold)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-deadline.C:
			break wait
		case <-tick.C:
			if target == leader && elected == nil {
				if l, _ := n.v.leader(context.Background(), others); l != nil {
					elected, electedAfter = l, time.Since(start)
				}
			}
		}
	}
	paused := time.Since(start)
	fr.Verified = paused > n.cfg.ElectionTimeout
	fr.note("paused %s (election timeout %s)", paused.Round(time.Millisecond), n.cfg.ElectionTimeout)
	if target == leader {
		if elected != nil {
			fr.note("it led; %s was elected after %s", elected.ID, electedAfter.Round(time.Millisecond))
		} else {
			fr.note("it led; no new leader was elected while it was paused")
		}
	}
	return func() { n.c.Resume(target) }
}

// addNode starts a fresh node, waits until it votes, and when the fault
// ends removes it again and kills it.
func (n *nemesis) addNode(fr *FaultRecord, members []*procs.Node) func() {
	added := n.c.AddNode()
	fr.Targets = []string{added.ID}
	n.c.Start(added)
	grown := append(slices.Clone(members), added)
	if err := n.v.waitVoters(n.cfg.HealthTimeout, grown); err != nil {
		fr.fail("%s did not become a voter: %v", added.ID, err)
	} else {
		fr.Verified = true
		fr.note("voters %v", ids(grown))
		n.v.setMembers(grown)
	}
	return func() {
		if err := n.removeServer(added.ID); err != nil {
			fr.fail("remove %s: %v", added.ID, err)
		} else if err := n.v.waitVoters(n.cfg.HealthTimeout, members); err != nil {
			fr.fail("after removing %s: %v", added.ID, err)
		} else {
			fr.note("removed again")
		}
		n.c.Kill(added)
		n.v.setMembers(members)
	}
}

// remove takes target out of the configuration and kills it; when the
// fault ends it rejoins with a fresh data dir (a removed server's own
// state is refused, see node/DESIGN.md).
func (n *nemesis) remove(fr *FaultRecord, members []*procs.Node, target, leader *procs.Node) func() {
	fr.Targets = []string{target.ID}
	if target == leader {
		fr.note("the leader")
	}
	if err := n.removeServer(target.ID); err != nil {
		fr.fail("remove %s: %v", target.ID, err)
		return nil
	}
	rest := without(members, target)
	if err := n.v.waitVoters(n.cfg.HealthTimeout, rest); err != nil {
		fr.fail("after removing %s: %v", target.ID, err)
		return nil
	}
	fr.Verified = true
	fr.note("voters %v", ids(rest))
	n.c.Kill(target)
	n.v.setMembers(rest)
	return func() {
		if err := os.RemoveAll(target.DataDir); err != nil {
			fr.fail("wipe %s: %v", target.DataDir, err)
		}
		n.c.Start(target)
		if err := n.v.waitVoters(n.cfg.HealthTimeout, members); err != nil {
			fr.fail("%s did not rejoin: %v", target.ID, err)
			fr.Verified = false
		} else {
			fr.note("rejoined with a fresh data dir")
		}
		n.v.setMembers(members)
	}
}

// removeServer asks the leader (the SDK follows hints) to remove id,
// retrying through leadership changes for up to HealthTimeout. A retry
// after an unknown outcome may find it already gone: NotFound is success
// here, the voters are checked next anyway.
func (n *nemesis) removeServer(id string) error {
	admin, err := n.v.admin(5 * time.Second)
	if err != nil {
		return err
	}
	defer admin.Close()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = admin.Cluster.RemoveServer(ctx, connect.NewRequest(&tollgatev1.RemoveServerRequest{Id: id}))
		cancel()
		if err == nil || connect.CodeOf(err) == connect.CodeNotFound {
			return nil
		}
		if time.Since(start) > n.cfg.HealthTimeout {
			return fmt.Errorf("%d tries in %s, last: %w", attempt, time.Since(start).Round(time.Second), err)
		}
		wait(500 * time.Millisecond) // retry pacing
	}
}

// transfer hands leadership to target (up to three tries: a transfer can
// time out under load).
// transferWindow bounds how long a transfer-leadership fault keeps asking.
// A transfer still in progress (an earlier one, or one timing out at the old
// leader) refuses a new one until it ends, so the fault retries on a poll
// instead of three immediate tries (which all met "in progress" once in CI).
const transferWindow = 5 * time.Second

func (n *nemesis) transfer(fr *FaultRecord, target *procs.Node) {
	fr.Targets = []string{target.ID}
	admin, err := n.v.admin(5 * time.Second)
	if err != nil {
		fr.fail("%v", err)
		return
	}
	defer admin.Close()
	attempt := 0
	procs.Poll(transferWindow, 500*time.Millisecond, func() bool {
		attempt++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := admin.Cluster.TransferLeadership(ctx, connect.NewRequest(&tollgatev1.TransferLeadershipRequest{Id: target.ID}))
		cancel()
		if err == nil && resp.Msg.NewLeaderId == target.ID {
			fr.Verified = true
			fr.note("%s leads (try %d)", target.ID, attempt)
			return true
		}
		if err == nil {
			// The answer may name the old leader although the transfer
			// worked (see the report); believe what the nodes say.
			var now *procs.Node
			procs.Poll(2*time.Second, 50*time.Millisecond, func() bool {
				now, _ = n.v.leader(context.Background(), n.v.memberList())
				return now == target
			})
			if now == target {
				fr.Verified = true
				fr.note("%s leads (try %d), though TransferLeadership answered new_leader_id %q", target.ID, attempt, resp.Msg.NewLeaderId)
				return true
			}
		}
		fr.note("try %d: %v %v", attempt, resp, err)
		return false
	})
	if !fr.Verified {
		fr.fail("leadership did not move to %s", target.ID)
	}
}

// snapshotLag kills a follower and keeps the workload writing until the
// leader has compacted its log past what the follower has; when the fault
// ends the follower restarts and must catch up by installing the leader's
// snapshot (its restore counter proves it).
func (n *nemesis) snapshotLag(fr *FaultRecord, members []*procs.Node, lagger *procs.Node) func() {
	fr.Targets = []string{lagger.ID}
	st, err := n.v.status(context.Background(), lagger, false)
	if err != nil {
		fr.fail("status of %s: %v", lagger.ID, err)
		return nil
	}
	n.c.Kill(lagger)
	rest := without(members, lagger)
	need := st.LastLogIndex + uint64(n.cfg.TrailingLogs) + 1
	var snap uint64
	if !procs.Poll(n.cfg.HealthTimeout, 100*time.Millisecond, func() bool {
		if _, lst := n.v.leader(context.Background(), rest); lst != nil {
			snap = lst.LastSnapshotIndex
		}
		return snap > need
	}) {
		fr.fail("the leader's newest snapshot is at %d, not past %d (the follower's last index %d + trailing logs) within %s",
			snap, need, st.LastLogIndex, n.cfg.HealthTimeout)
	} else {
		fr.note("%s stopped at index %d; the leader compacted to snapshot %d", lagger.ID, st.LastLogIndex, snap)
	}
	// A restart restores the node's own newest snapshot first (one
	// restore); installing the leader's is one more.
	want := 1.0
	if st.LastSnapshotIndex > 0 {
		want = 2
	}
	return func() {
		n.c.Start(lagger)
		var got float64
		if procs.Poll(n.cfg.HealthTimeout, 100*time.Millisecond, func() bool {
			got, err = n.metric(lagger, "tollgate_snapshot_restores_total")
			return err == nil && got >= want
		}) {
			fr.Verified = fr.Err == ""
			fr.note("it installed a snapshot (%v restores since the restart)", got)
		} else {
			fr.fail("%s restored %v snapshots since the restart (want %v): no snapshot install (%v)", lagger.ID, got, want, err)
		}
	}
}

// snapshotKill SIGKILLs target the moment it starts writing a snapshot.
func (n *nemesis) snapshotKill(fr *FaultRecord, target *procs.Node) func() {
	fr.Targets = []string{target.ID}
	name, interrupted, err := n.c.KillDuringSnapshot(target, n.cfg.HealthTimeout)
	if err != nil {
		fr.fail("%v", err)
		return nil
	}
	fr.Verified = true
	if interrupted {
		fr.note("killed while writing snapshot %s (its temporary directory was left behind)", name)
	} else {
		fr.note("killed as snapshot %s began (it was complete by the time the process died)", name)
	}
	return func() { n.c.Start(target) }
}

// clockOffset restarts target with --clock-offset and makes it leader, so
// its skewed clock stamps the log; when the fault ends it restarts without.
func (n *nemesis) clockOffset(fr *FaultRecord, target *procs.Node, offset time.Duration) func() {
	fr.Targets = []string{target.ID}
	n.c.Kill(target)
	target.Args = append(withoutFlag(target.Args, "--clock-offset"), "--clock-offset", offset.String())
	n.c.Start(target)
	undo := func() {
		n.c.Kill(target)
		target.Args = withoutFlag(target.Args, "--clock-offset")
		n.c.Start(target)
	}
	if err := n.v.waitHealthy(n.cfg.HealthTimeout); err != nil {
		fr.fail("after restarting %s with --clock-offset %s: %v", target.ID, offset, err)
		return undo
	}
	n.transfer(fr, target)
	if !fr.Verified {
		return undo
	}
	startLog, startWall := n.logTime(target), time.Now()
	fr.note("offset %s", offset)
	if offset > 0 {
		// Its stamps run ahead of the wall clock by about the offset.
		var ahead time.Duration
		fr.Verified = procs.Poll(5*time.Second, 100*time.Millisecond, func() bool {
			ahead = time.Until(n.logTime(target))
			return ahead > offset-30*time.Second
		})
		fr.note("log time %s ahead of the wall clock", ahead.Round(time.Second))
	}
	return func() {
		if offset < 0 {
			// Stamps never go back: behind the wall clock, the log time
			// stands still while it leads.
			logMoved, wallMoved := n.logTime(target).Sub(startLog), time.Since(startWall)
			fr.Verified = logMoved < wallMoved/2
			fr.note("log time moved %s while the wall clock moved %s", logMoved.Round(time.Millisecond), wallMoved.Round(time.Millisecond))
		}
		undo()
	}
}

// logTime is the stamp of the last entry n applied.
func (n *nemesis) logTime(node *procs.Node) time.Time {
	st, err := n.v.status(context.Background(), node, false)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(st.LastAppliedLogTimeMs)
}

// metric reads an unlabelled Prometheus sample from a node's /metrics.
func (n *nemesis) metric(node *procs.Node, name string) (float64, error) {
	resp, err := n.v.http.Get("http://" + node.APIAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(rest, 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found on %s", name, node.ID)
}

// healAll undoes whatever may still be in effect: cuts, drops, pauses,
// dead members.
func (n *nemesis) healAll() {
	n.c.Heal()
	for _, x := range n.c.NodeList() {
		n.c.Resume(x)
	}
	for _, x := range n.v.memberList() {
		if !x.Running() {
			n.c.Start(x)
		}
	}
}

// withoutFlag drops a flag and its value from args.
func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}
