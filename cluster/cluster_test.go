package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/model"
	"go.uber.org/goleak"
)

// fakeModel records the steps it ran; fail makes Forward return an error.
type fakeModel struct {
	node int
	mu   sync.Mutex
	got  [][]model.Seq
	fail error
}

func (m *fakeModel) Forward(_ context.Context, seqs []model.Seq) ([][]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, seqs)
	if m.fail != nil {
		return nil, m.fail
	}
	out := make([][]float32, len(seqs))
	if m.node == 0 {
		for i, s := range seqs {
			out[i] = []float32{float32(len(s.Tokens))}
		}
	}
	return out, nil
}

func (m *fakeModel) setFail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

func (m *fakeModel) steps() [][]model.Seq {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([][]model.Seq(nil), m.got...)
}

func (*fakeModel) BlockSize() int { return 4 }
func (*fakeModel) NumBlocks() int { return 8 }
func (*fakeModel) VocabSize() int { return 16 }
func (*fakeModel) MaxSeqLen() int { return 32 }

// freeAddr returns a loopback address with a port nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type cluster struct {
	leader    *Leader
	followers []*Follower
	models    []*fakeModel
	serveErr  []chan error
}

// start runs the rendezvous of nnodes in-process nodes and starts the followers' Serve.
func start(t *testing.T, nnodes int, fingerprint func(node int) string) (*cluster, []error) {
	t.Helper()
	addr := freeAddr(t)
	c := &cluster{followers: make([]*Follower, nnodes), models: make([]*fakeModel, nnodes), serveErr: make([]chan error, nnodes)}
	errs := make([]error, nnodes)
	roots := make([][]byte, nnodes)
	var wg sync.WaitGroup
	for n := range nnodes {
		c.models[n] = &fakeModel{node: n}
		cfg := Config{NNodes: nnodes, NodeRank: n, Addr: addr, WorldSize: 2 * nnodes, Fingerprint: fingerprint(n), Timeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n == 0 {
				c.leader, roots[n], errs[n] = Lead(context.Background(), cfg, func() ([]byte, error) { return []byte("root-info"), nil })
				return
			}
			c.followers[n], roots[n], errs[n] = Follow(context.Background(), cfg)
		}()
	}
	wg.Wait()
	if errors.Join(errs...) != nil {
		return nil, errs
	}
	for n, r := range roots {
		if string(r) != "root-info" {
			t.Fatalf("node %d got root %q", n, r)
		}
	}
	c.leader.Attach(c.models[0])
	for n := 1; n < nnodes; n++ {
		c.serveErr[n] = make(chan error, 1)
		go func() { c.serveErr[n] <- c.followers[n].Serve(context.Background(), c.models[n]) }()
	}
	return c, nil
}

func same(int) string { return "cfg-abc" }

func (c *cluster) serveResult(t *testing.T, n int) error {
	t.Helper()
	select {
	case err := <-c.serveErr[n]:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("node %d still serving", n)
		return nil
	}
}

func TestStepsReachEveryNodeInOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, errs := start(t, 3, same)
	if errs != nil {
		t.Fatal(errs)
	}
	steps := [][]model.Seq{
		{{Tokens: []int32{1, 2, 3}, Blocks: []int32{0}, AllLogits: true}, {Tokens: []int32{7}, Pos: 5, Blocks: []int32{1, 2}}},
		{{Tokens: []int32{4}, Pos: 3, Blocks: []int32{0}}},
	}
	for i, s := range steps {
		out, err := c.leader.Forward(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(s) || out[0][0] != float32(len(s[0].Tokens)) {
			t.Fatalf("step %d: leader returned %v", i, out)
		}
	}
	if err := c.leader.Close(); err != nil {
		t.Fatal(err)
	}
	for n := 1; n < 3; n++ {
		if err := c.serveResult(t, n); err != nil {
			t.Fatalf("node %d: Serve after goodbye: %v", n, err)
		}
		if got := c.models[n].steps(); !reflect.DeepEqual(got, steps) {
			t.Fatalf("node %d ran %+v, want %+v", n, got, steps)
		}
	}
	if _, err := c.leader.Forward(context.Background(), steps[0]); err == nil {
		t.Fatal("Forward after Close succeeded")
	}
}

func TestRendezvousMismatchFailsBothSides(t *testing.T) {
	defer goleak.VerifyNone(t)
	_, errs := start(t, 2, func(n int) string { return fmt.Sprintf("cfg-%d", n) })
	if errs == nil {
		t.Fatal("nodes with different fingerprints formed a cluster")
	}
	for n, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "fingerprint") {
			t.Fatalf("node %d: %v, want a fingerprint mismatch", n, err)
		}
	}
}

func TestFollowerErrorFailsTheStep(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, errs := start(t, 2, same)
	if errs != nil {
		t.Fatal(errs)
	}
	defer c.leader.Close()
	c.models[1].setFail(errors.New("HcclAllReduce: boom"))
	_, err := c.leader.Forward(context.Background(), []model.Seq{{Tokens: []int32{1}, Blocks: []int32{0}}})
	if err == nil || !strings.Contains(err.Error(), "node 1: HcclAllReduce: boom") {
		t.Fatalf("got %v, want node 1's error", err)
	}
	c.models[1].setFail(nil)
	if _, err := c.leader.Forward(context.Background(), []model.Seq{{Tokens: []int32{1}, Blocks: []int32{0}}}); err != nil {
		t.Fatalf("a step's error stopped the cluster: %v", err)
	}
}

func TestLostFollowerFailsForwardAndStopsTheOthers(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, errs := start(t, 3, same)
	if errs != nil {
		t.Fatal(errs)
	}
	defer c.leader.Close()
	_ = c.followers[2].Close() // node 2 dies
	if err := c.serveResult(t, 2); err == nil {
		t.Fatal("node 2's Serve returned nil after its connection closed")
	}
	start := time.Now()
	var err error
	for err == nil && time.Since(start) < 5*time.Second { // the first step may be sent before the loss is seen
		_, err = c.leader.Forward(context.Background(), []model.Seq{{Tokens: []int32{1}, Blocks: []int32{0}}})
	}
	if err == nil || !strings.Contains(err.Error(), "node 2") {
		t.Fatalf("got %v, want an error naming node 2", err)
	}
	if _, err2 := c.leader.Forward(context.Background(), []model.Seq{{Tokens: []int32{1}, Blocks: []int32{0}}}); err2 == nil {
		t.Fatal("the cluster went on after losing a node")
	}
	if err := c.serveResult(t, 1); !errors.Is(err, ErrLeaderGone) {
		t.Fatalf("node 1: %v, want ErrLeaderGone (the leader closed every connection)", err)
	}
}

func TestLeaderGoneEndsServe(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, errs := start(t, 2, same)
	if errs != nil {
		t.Fatal(errs)
	}
	for _, p := range c.leader.peers {
		_ = p.conn.Close() // the leader's process dies: no goodbye
	}
	if err := c.serveResult(t, 1); !errors.Is(err, ErrLeaderGone) {
		t.Fatalf("got %v, want ErrLeaderGone", err)
	}
	_ = c.leader.Close()
}

func TestConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{NNodes: 1, Addr: "x:1", WorldSize: 2}, "at least 2"},
		{Config{NNodes: 2, NodeRank: 2, Addr: "x:1", WorldSize: 2}, "outside"},
		{Config{NNodes: 2, WorldSize: 2}, "init address"},
		{Config{NNodes: 2, Addr: "x:1", WorldSize: 3}, "not divisible"},
	} {
		cfg := tc.cfg
		if err := cfg.check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := Follow(ctx, Config{NNodes: 2, NodeRank: 1, Addr: freeAddr(t), WorldSize: 2})
	if err == nil || !strings.Contains(err.Error(), "could not reach the leader") {
		t.Fatalf("Follow with nobody listening: %v", err)
	}
}

// BenchmarkStepLockstep measures what the lockstep adds to one decode step of a batch of
// 8 sequences (each with a 64-block table) with one follower on loopback: encode, send,
// the follower's decode and ack, with models that do nothing.
func BenchmarkStepLockstep(b *testing.B) {
	addr := freeAddr(b)
	cfg := Config{NNodes: 2, Addr: addr, WorldSize: 2, Fingerprint: "x", Timeout: 10 * time.Second}
	fcfg := cfg
	fcfg.NodeRank = 1
	fch := make(chan *Follower, 1)
	go func() {
		f, _, err := Follow(context.Background(), fcfg)
		if err != nil {
			b.Error(err)
		}
		fch <- f
	}()
	l, _, err := Lead(context.Background(), cfg, func() ([]byte, error) { return []byte("r"), nil })
	if err != nil {
		b.Fatal(err)
	}
	f := <-fch
	l.Attach(&fakeModel{})
	done := make(chan error, 1)
	go func() { done <- f.Serve(context.Background(), &fakeModel{node: 1, got: nil}) }()
	seqs := make([]model.Seq, 8)
	for i := range seqs {
		blocks := make([]int32, 64)
		for j := range blocks {
			blocks[j] = int32(i*64 + j)
		}
		seqs[i] = model.Seq{Tokens: []int32{int32(i)}, Pos: 1000, Blocks: blocks}
	}
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := l.Forward(context.Background(), seqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/step")
	b.StopTimer()
	_ = l.Close()
	<-done
}
