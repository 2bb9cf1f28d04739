package transport

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/fsm"
	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
	"github.com/tollgate/tollgate/node"
)

// fuzzNowMs is the log time of every entry the fake node applies
// (2025-01-15 12:00 UTC).
var fuzzNowMs = time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC).UnixMilli()

// errFakeNode is what the fake node answers when a fuzz input asks it to
// fail (an unavailable leader, say).
var errFakeNode = errors.New("fake node: no leader")

// fakeNode is the Node the handlers see in FuzzRequestValidation: a real
// state machine and no Raft. Propose checks every command that reaches it
// the way a replica would (it validates, and round-trips through the
// codec), then applies them in one entry; Read evaluates at the entries'
// log time. The embedded Node is nil: the budget and rate-limit handlers
// need nothing else, and a call to anything else panics the fuzz input.
type fakeNode struct {
	Node
	t     *testing.T
	m     *fsm.Machine
	index uint64
	// fail makes Propose and Read return errFakeNode without applying.
	fail bool
	// consulted is set once Propose or Read is called.
	consulted bool
	// rejections are the codes of the errors the state machine handed out
	// (results of Propose, errors of a read).
	rejections map[fsm.Code]bool
}

func newFakeNode(t *testing.T, setup []byte, fail bool) *fakeNode {
	n := &fakeNode{t: t, m: fsm.New(), fail: fail, rejections: map[fsm.Code]bool{}}
	n.index++
	for _, r := range n.m.ApplyEntry(n.index, 1, setup).Results {
		if r.Err != nil {
			t.Fatalf("fake node setup: %v", r.Err)
		}
	}
	return n
}

func (n *fakeNode) Propose(_ context.Context, cmds ...fsm.Command) ([]fsm.Result, uint64, error) {
	n.consulted = true
	if len(cmds) == 0 || len(cmds) > fsm.BatchItemsMax {
		n.t.Fatalf("a proposal of %d commands", len(cmds))
	}
	entry := fsm.Entry{NowMs: fuzzNowMs, Commands: make([][]byte, len(cmds))}
	for i, c := range cmds {
		entry.Commands[i] = roundTripCommand(n.t, c)
	}
	if n.fail {
		return nil, 0, errFakeNode
	}
	n.index++
	out := n.m.ApplyEntry(n.index, 1, fsm.EncodeEntry(entry))
	for _, r := range out.Results {
		if r.Err != nil {
			n.rejections[r.Err.Code] = true
		}
	}
	return out.Results, n.index, nil
}

// roundTripCommand checks that c would be applied as proposed: it passes
// fsm.Validate, and decoding its encoding gives the same command, whose
// encoding is the same bytes (idempotency fingerprints hash them).
func roundTripCommand(t *testing.T, c fsm.Command) []byte {
	if err := fsm.Validate(c); err != nil {
		t.Fatalf("proposed %T fails fsm.Validate: %v\n%+v", c, err, c)
	}
	raw, err := fsm.EncodeCommand(c)
	if err != nil {
		t.Fatalf("encode proposed %T: %v", c, err)
	}
	back, err := fsm.DecodeCommand(raw)
	if err != nil {
		t.Fatalf("proposed %T does not decode: %v\n%+v", c, err, c)
	}
	// %+v, not reflect.DeepEqual: an empty slice encodes as an absent one.
	if got, want := fmt.Sprintf("%+v", back), fmt.Sprintf("%+v", c); got != want {
		t.Fatalf("proposed %T decodes as\n%s\nwant\n%s", c, got, want)
	}
	if again, err := fsm.EncodeCommand(back); err != nil || string(again) != string(raw) {
		t.Fatalf("proposed %T re-encodes differently (%v)", c, err)
	}
	return raw
}

func (n *fakeNode) Read(_ context.Context, level node.Consistency, maxStaleness time.Duration, fn func(fsm.View) error) (node.ReadInfo, error) {
	n.consulted = true
	switch {
	case level != node.Linearizable && level != node.Leader && level != node.Stale:
		n.t.Fatalf("read at unknown level %d", level)
	case maxStaleness < 0 || maxStaleness > 24*time.Hour || (maxStaleness > 0 && level != node.Stale):
		n.t.Fatalf("read at level %d with max staleness %s", level, maxStaleness)
	}
	if n.fail {
		return node.ReadInfo{}, errFakeNode
	}
	index, err := n.m.Read(fuzzNowMs, fn)
	var rejection *fsm.Error
	if errors.As(err, &rejection) {
		n.rejections[rejection.Code] = true
	}
	return node.ReadInfo{Consistency: level, AppliedIndex: index, NodeID: "fuzz"}, err
}

// fuzzSetup is the entry the fake node starts from, at index 1: budgets
// (one with a parent), policies, and a hold "h1-7" that Commit and Release
// seeds name. "slow" refills one token a leap year, so a check that empties
// it resets after a thousand years.
func fuzzSetup(t testing.TB) []byte {
	monthly := fsm.BudgetSpec{ID: "llm", AmountMicros: 1000 * fsm.MicrosPerUnit, Currency: "USD", Period: fsm.PeriodMonth,
		Timezone: "Europe/Berlin", Enforcement: fsm.EnforcementHard, Thresholds: []uint32{50, 80, 100}}
	child := fsm.BudgetSpec{ID: "llm-team-a", ParentID: "llm", AmountMicros: 100 * fsm.MicrosPerUnit, Currency: "USD",
		Period: fsm.PeriodMonth, Timezone: "Europe/Berlin", Enforcement: fsm.EnforcementSoft}
	small := fsm.BudgetSpec{ID: "b", AmountMicros: 10 * fsm.MicrosPerUnit, Currency: "USD", Period: fsm.PeriodNone,
		Timezone: "UTC", Enforcement: fsm.EnforcementHard}
	cmds := []fsm.Command{
		&fsm.CreateBudget{Tenant: "acme", Budget: monthly},
		&fsm.CreateBudget{Tenant: "acme", Budget: child},
		&fsm.CreateBudget{Tenant: "acme", Budget: small},
		&fsm.CreatePolicy{Tenant: "acme", Policy: fsm.PolicySpec{ID: "per-user", Algorithm: fsm.AlgorithmTokenBucket, Limit: 10, WindowMs: 1000, Burst: 10}},
		&fsm.CreatePolicy{Tenant: "acme", Policy: fsm.PolicySpec{ID: "p", Algorithm: fsm.AlgorithmGCRA, Limit: 10, WindowMs: 1000, Burst: 10,
			Scales: []fsm.PriorityScale{{Priority: 1, Percent: 50}}}},
		&fsm.CreatePolicy{Tenant: "acme", Policy: fsm.PolicySpec{ID: "slow", Algorithm: fsm.AlgorithmTokenBucket, Limit: 1,
			WindowMs: fsm.RateWindowMaxMs, Burst: 1000}},
		&fsm.Reserve{Tenant: "acme", BudgetID: "b", AmountMicros: fsm.MicrosPerUnit, TTLMs: fsm.HoldTTLMaxMs}, // h1-7
	}
	// The cluster's first signing key comes first: decisions need one.
	cmds = append([]fsm.Command{&fsm.RotateSigningKey{Seed: make([]byte, 32)}}, cmds...)
	entry := fsm.Entry{NowMs: fuzzNowMs}
	for _, c := range cmds {
		raw, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		entry.Commands = append(entry.Commands, raw)
	}
	return fsm.EncodeEntry(entry)
}

// fuzzMethod is one unary handler of BudgetService or RateLimitService,
// called with a JSON body.
type fuzzMethod struct {
	procedure string
	// call decodes body as the Connect JSON codec does and calls the
	// handler; decoded is false when the body is not a valid request.
	call func(ctx context.Context, n Node, body []byte) (resp proto.Message, err error, decoded bool)
}

// connectJSON is how Connect decodes a JSON request body.
var connectJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

func unaryMethod[Req, Resp any, PReq interface {
	*Req
	proto.Message
}, PResp interface {
	*Resp
	proto.Message
}](procedure string, handle func(Node, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) fuzzMethod {
	return fuzzMethod{procedure: procedure, call: func(ctx context.Context, n Node, body []byte) (proto.Message, error, bool) {
		msg := PReq(new(Req))
		if err := connectJSON.Unmarshal(body, msg); err != nil {
			return nil, nil, false
		}
		resp, err := handle(n, ctx, connect.NewRequest((*Req)(msg)))
		if err != nil {
			return nil, err, true
		}
		if resp == nil || resp.Msg == nil {
			return nil, errors.New("the handler returned no response and no error"), true
		}
		return PResp(resp.Msg), nil, true
	}}
}

func budgetMethod[Req, Resp any, PReq interface {
	*Req
	proto.Message
}, PResp interface {
	*Resp
	proto.Message
}](name string, method func(*budgetHandler, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) fuzzMethod {
	return unaryMethod[Req, Resp, PReq, PResp]("BudgetService/"+name, func(n Node, ctx context.Context, req *connect.Request[Req]) (*connect.Response[Resp], error) {
		return method(&budgetHandler{node: n}, ctx, req)
	})
}

func rateLimitMethod[Req, Resp any, PReq interface {
	*Req
	proto.Message
}, PResp interface {
	*Resp
	proto.Message
}](name string, method func(*rateLimitHandler, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) fuzzMethod {
	return unaryMethod[Req, Resp, PReq, PResp]("RateLimitService/"+name, func(n Node, ctx context.Context, req *connect.Request[Req]) (*connect.Response[Resp], error) {
		return method(&rateLimitHandler{node: n}, ctx, req)
	})
}

// fuzzMethods are indexed by the fuzz input's first argument; append only,
// so that corpus entries keep naming the same method.
var fuzzMethods = []fuzzMethod{
	budgetMethod("CreateBudget", (*budgetHandler).CreateBudget),
	budgetMethod("GetBudget", (*budgetHandler).GetBudget),
	budgetMethod("ListBudgets", (*budgetHandler).ListBudgets),
	budgetMethod("UpdateBudget", (*budgetHandler).UpdateBudget),
	budgetMethod("DeleteBudget", (*budgetHandler).DeleteBudget),
	budgetMethod("Check", (*budgetHandler).Check),
	budgetMethod("Consume", (*budgetHandler).Consume),
	budgetMethod("ConsumeBatch", (*budgetHandler).ConsumeBatch),
	budgetMethod("Reserve", (*budgetHandler).Reserve),
	budgetMethod("Commit", (*budgetHandler).Commit),
	budgetMethod("Release", (*budgetHandler).Release),
	rateLimitMethod("CreatePolicy", (*rateLimitHandler).CreatePolicy),
	rateLimitMethod("GetPolicy", (*rateLimitHandler).GetPolicy),
	rateLimitMethod("ListPolicies", (*rateLimitHandler).ListPolicies),
	rateLimitMethod("UpdatePolicy", (*rateLimitHandler).UpdatePolicy),
	rateLimitMethod("DeletePolicy", (*rateLimitHandler).DeletePolicy),
	rateLimitMethod("Check", (*rateLimitHandler).Check),
	rateLimitMethod("CheckBatch", (*rateLimitHandler).CheckBatch),
}

func fuzzMethodIndex(tb testing.TB, procedure string) uint8 {
	for i, m := range fuzzMethods {
		if m.procedure == procedure {
			return uint8(i)
		}
	}
	tb.Fatalf("no fuzz method %s", procedure)
	return 0
}

// requestSeeds are JSON bodies of the API contract and of malformed input
// (TestJSONContract, TestBadInput), and one of each method not there.
var requestSeeds = []struct{ procedure, body string }{
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"llm2","amount":"1000.00","currency":"USD","period":"PERIOD_MONTH","timezone":"Europe/Berlin","enforcement":"ENFORCEMENT_HARD","thresholdsPercent":[50,80,100]}}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"llm-team-b","amount":"100.00","currency":"USD","period":"PERIOD_MONTH","timezone":"Europe/Berlin","parentId":"llm"}}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","requestId":"c-1","budget":{"id":"c","amount":"0.000001","currency":"JPY","period":"PERIOD_CUSTOM","customPeriod":"36h","enforcement":"ENFORCEMENT_SHADOW"}}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"llm","amount":"0.0125","requestId":"r-1"}`},
	{"BudgetService/GetBudget", `{"tenant":"acme","budgetId":"llm","consistency":"CONSISTENCY_LINEARIZABLE"}`},
	{"BudgetService/GetBudget", `{"tenant":"acme","budgetId":"b","consistency":"CONSISTENCY_STALE","maxStaleness":"2s"}`},
	{"BudgetService/ListBudgets", `{"tenant":"acme","pageSize":2,"pageToken":"YWZ0ZXI6Yg","consistency":"CONSISTENCY_LEADER"}`},
	{"BudgetService/Check", `{"tenant":"acme","budgetId":"llm-team-a","amount":"99.5"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"llm","amount":"5000","requestId":"r-big"}`},
	{"BudgetService/Reserve", `{"tenant":"acme","budgetId":"llm","amount":"2.00","ttl":"30s","requestId":"r-2"}`},
	{"BudgetService/Commit", `{"tenant":"acme","holdId":"h1-7","amount":"1.50","requestId":"r-3"}`},
	{"BudgetService/Release", `{"tenant":"acme","holdId":"h1-7","requestId":"r-5"}`},
	{"BudgetService/UpdateBudget", `{"tenant":"acme","budget":{"id":"b","amount":"20","thresholdsPercent":[10]},"updateMask":"amount,thresholdsPercent"}`},
	{"BudgetService/DeleteBudget", `{"tenant":"acme","budgetId":"llm-team-a","requestId":"d-1"}`},
	{"BudgetService/ConsumeBatch", `{"tenant":"acme","items":[{"budgetId":"llm","amount":"1"},{"budgetId":"llm-team-a","amount":"2"}]}`},
	{"BudgetService/ConsumeBatch", `{"tenant":"acme","requestId":"batch","atomic":true,"items":[{"budgetId":"b","amount":"1"},{"budgetId":"llm","amount":"2"}]}`},
	{"RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"per-key","algorithm":"ALGORITHM_TOKEN_BUCKET","limit":"10","window":"1s","burst":"10"}}`},
	{"RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"swl","algorithm":"ALGORITHM_SLIDING_WINDOW_LOG","limit":"100","window":"1m","priorityScales":[{"priority":1,"percent":50}]}}`},
	{"RateLimitService/Check", `{"tenant":"acme","policyId":"per-user","key":"u-1","cost":"1"}`},
	{"RateLimitService/Check", `{"tenant":"acme","policyId":"p","key":"u-1","cost":"5","priority":1}`},
	{"RateLimitService/CheckBatch", `{"tenant":"acme","items":[{"policyId":"per-user","key":"u-2","cost":"1"},{"policyId":"per-user","key":"u-2","cost":"9"},{"policyId":"per-user","key":"u-2","cost":"1"}]}`},
	{"RateLimitService/UpdatePolicy", `{"tenant":"acme","policy":{"id":"per-user","limit":"20","window":"2s"},"updateMask":"limit,window"}`},
	{"RateLimitService/DeletePolicy", `{"tenant":"acme","policyId":"p","requestId":"dp-1"}`},
	{"RateLimitService/GetPolicy", `{"tenant":"acme","policyId":"slow"}`},
	{"RateLimitService/ListPolicies", `{"tenant":"acme","pageSize":1000}`},
	// TestBadInput.
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"-1"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"1e3"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"0.0000001"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"b"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"0"}`},
	{"BudgetService/Consume", `{"tenant":"acme","amount":"1"}`},
	{"BudgetService/Consume", `{"budgetId":"b","amount":"1"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"a b","amount":"1"}`},
	{"BudgetService/GetBudget", `{"tenant":"acme","budgetId":"` + strings.Repeat("x", 129) + `"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"b","amount":"1","requestId":"` + strings.Repeat("r", 129) + `"}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"XYZ"}}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"usd"}}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"USD","timezone":"Mars/Olympus"}}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"USD","period":"PERIOD_CUSTOM"}}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"id":"c","amount":"1","currency":"USD","thresholdsPercent":[80,50]}}`},
	{"BudgetService/CreateBudget", `{"tenant":"acme","budget":{"amount":"1","currency":"USD"}}`},
	{"BudgetService/Reserve", `{"tenant":"acme","budgetId":"b","amount":"1","ttl":"48h"}`},
	{"BudgetService/Reserve", `{"tenant":"acme","budgetId":"b","amount":"1","ttl":"soon"}`},
	{"BudgetService/ConsumeBatch", `{"tenant":"acme","items":[` + strings.TrimSuffix(strings.Repeat(`{"budgetId":"b","amount":"1"},`, fsm.BatchItemsMax+1), ",") + `]}`},
	{"BudgetService/ConsumeBatch", `{"tenant":"acme","items":[{"budgetId":"b","amount":"1"},{"budgetId":"b","amount":"x"}]}`},
	{"RateLimitService/Check", `{"tenant":"acme","policyId":"p","key":"k","cost":"0"}`},
	{"RateLimitService/Check", `{"tenant":"acme","policyId":"p"}`},
	{"RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"q","algorithm":"ALGORITHM_GCRA","window":"1s"}}`},
	{"RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"q","limit":"1","window":"1s"}}`},
	{"RateLimitService/CreatePolicy", `{"tenant":"acme","policy":{"id":"q","algorithm":"ALGORITHM_GCRA","limit":"1","window":"0.5ms"}}`},
	{"BudgetService/GetBudget", `{"tenant":"acme","budgetId":"b","maxStaleness":"1s"}`},
	{"BudgetService/ListBudgets", `{"tenant":"acme","pageToken":"!!"}`},
	{"BudgetService/UpdateBudget", `{"tenant":"acme","budget":{"id":"b"},"updateMask":"currency"}`},
	{"BudgetService/Consume", `{"tenant":"acme","budgetId":"nope","amount":"1"}`},
}

// FuzzRequestValidation sends a JSON body to a budget or rate-limit
// handler backed by a fake node (see fakeNode). A body that decodes as the
// request must never panic the handler; every command that reaches the node
// passes fsm.Validate and round-trips through the codec; an error is either
// InvalidArgument, the node's own error, or a rejection the state machine
// handed out; and a reply is a well-formed message.
func FuzzRequestValidation(f *testing.F) {
	setup := fuzzSetup(f)
	for i, s := range requestSeeds {
		f.Add(fuzzMethodIndex(f, s.procedure), []byte(s.body), i == 0)
	}
	f.Fuzz(func(t *testing.T, method uint8, body []byte, nodeFails bool) {
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		n := newFakeNode(t, setup, nodeFails)
		resp, err, decoded := m.call(context.Background(), n, body)
		if !decoded {
			return
		}
		if err != nil {
			checkHandlerError(t, m.procedure, n, err)
			return
		}
		if nodeFails {
			t.Fatalf("%s: answered although the node failed", m.procedure)
		}
		if verr := checkWellFormed(resp.ProtoReflect()); verr != nil {
			t.Fatalf("%s: reply %v: %v", m.procedure, resp, verr)
		}
		if _, err := protojson.Marshal(resp); err != nil {
			t.Fatalf("%s: reply does not encode as JSON: %v", m.procedure, err)
		}
	})
}

func checkHandlerError(t *testing.T, procedure string, n *fakeNode, err error) {
	t.Helper()
	if errors.Is(err, errFakeNode) {
		if !n.fail || !n.consulted {
			t.Fatalf("%s: the node's error without asking the node", procedure)
		}
		return
	}
	var rejection *fsm.Error
	if !errors.As(err, &rejection) {
		t.Fatalf("%s: error %q (%T) is neither an fsm.Error nor the node's", procedure, err, err)
	}
	if rejection.Code != fsm.CodeInvalidArgument && !n.rejections[rejection.Code] {
		t.Fatalf("%s: error %q has code %d, which the state machine did not hand out", procedure, err, rejection.Code)
	}
	if rejection.Message == "" {
		t.Fatalf("%s: an error without a message", procedure)
	}
	if got := codeOf(err); rejection.Code == fsm.CodeInvalidArgument && got != connect.CodeInvalidArgument {
		t.Fatalf("%s: InvalidArgument maps to %s", procedure, got)
	}
}

// checkWellFormed checks what proto itself does not: every duration in a
// reply is a valid, non-negative google.protobuf.Duration (ttl, reset and
// retry times, staleness), and every timestamp is valid.
func checkWellFormed(m protoreflect.Message) error {
	switch msg := m.Interface().(type) {
	case *durationpb.Duration:
		if err := msg.CheckValid(); err != nil {
			return err
		}
		if msg.GetSeconds() < 0 || msg.GetNanos() < 0 {
			return fmt.Errorf("negative duration %s", msg.AsDuration())
		}
		return nil
	case *timestamppb.Timestamp:
		return msg.CheckValid()
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil:
		case fd.IsList():
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = checkWellFormed(v.List().Get(i).Message())
			}
		case fd.IsMap():
		default:
			err = checkWellFormed(v.Message())
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", fd.Name(), err)
		}
		return err == nil
	})
	return err
}

// durationMs (convert.go) multiplies milliseconds into a time.Duration,
// which overflows past 292 years: a TOKEN_BUCKET of burst 1000 refilling one
// token per leap year (window "8784h", limit 1) that one check empties
// resets after 1000 leap years, and the reply says reset_after
// "-5271088147.419103232s". Reset and retry times are log-time differences
// of up to MaxInt64 ms (fsm saturates, never wraps), so a reply must not
// say less than the longest time.Duration either.
func TestRateDurationsBeyondTimeDuration(t *testing.T) {
	n := newFakeNode(t, fuzzSetup(t), false)
	resp, err := (&rateLimitHandler{node: n}).Check(context.Background(), connect.NewRequest(&tollgatev1.RateLimitServiceCheckRequest{
		Tenant: "acme", PolicyId: "slow", Key: "k", Cost: proto.Int64(1000)}))
	if err != nil {
		t.Fatal(err)
	}
	longest := int64(math.MaxInt64 / int64(time.Second))
	if err := checkWellFormed(resp.Msg.ProtoReflect()); err != nil || resp.Msg.ResetAfter.GetSeconds() < longest {
		t.Fatalf("reset_after %v for a reset 1000 leap years ahead (%v)", resp.Msg.ResetAfter, err)
	}
	for _, ms := range []int64{1000 * fsm.RateWindowMaxMs, math.MaxInt64} {
		out := rateToWire(&fsm.RateResult{ResetAfterMs: ms, RetryAfterMs: ms}, 1)
		for name, d := range map[string]*durationpb.Duration{"reset_after": out.ResetAfter, "retry_after": out.RetryAfter} {
			if err := checkWellFormed(d.ProtoReflect()); err != nil || d.GetSeconds() < longest {
				t.Errorf("%d ms: %s %v (%v)", ms, name, d, err)
			}
		}
	}
}

func (n *fakeNode) LeaderAddr() (bool, string) { return true, "" }
