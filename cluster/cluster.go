// Package cluster has one job: rendezvous and step lockstep across gateway processes
// that together run one model whose ranks are spread over several nodes (like SGLang's
// --nnodes / --node-rank / --dist-init-addr).
//
// Node 0 (the leader) listens on the init address. Every other node (a follower)
// connects and says who it is: node rank, node count, world size and a fingerprint of
// what it loaded (checkpoint config, backend, cache geometry). The leader checks them
// all, makes the collective library's root info (HcclGetRootInfo) and sends it to every
// follower; a mismatch fails both sides with a message naming it. Then each node builds
// its local ranks, joined by that root info.
//
// While serving, only the leader runs the engine. Leader wraps the leader's model as
// the engine's model: each Forward first sends the step (the sequences: tokens,
// positions, block tables, flags) to every follower, then runs the leader's own ranks;
// followers (Follower.Serve) run the same Forward on theirs and acknowledge with ok or
// their error. Collectives inside the step tie the ranks together; the step messages
// only make every process issue the same collectives in the same order.
//
// Failures become errors, never hangs: a lost connection (a node died) or a follower's
// error makes the leader's Forward fail at once, and every later Forward fail with the
// same cause; the leader then closes every connection, so the other followers stop too.
// Collectives blocked in the local ranks end by themselves (HCCL's timeout, or at once
// on the emulator, whose hub sees the dead process's connection close).
//
// Wire format: encoding/gob over one TCP connection per follower. Gob is in the
// standard library, frames and type-checks every message, and lets messages gain fields
// without breaking the decoder; a step is a few kilobytes (ids and block tables), so its
// encoding cost is negligible next to a forward pass. The protocol has a version number
// checked at rendezvous. The init address must be on a trusted network: anyone who can
// reach it during rendezvous can join.
package cluster

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dsgate/dsgate/core/model"
)

// protocolVersion changes whenever a message changes incompatibly.
const protocolVersion = 1

// Config says where this process sits in the cluster.
type Config struct {
	NNodes   int    // nodes in the cluster (≥ 2 for this package to be useful)
	NodeRank int    // this node: 0 = leader
	Addr     string // the leader's init address (host:port): it listens there, followers dial it
	// WorldSize is the total number of ranks; every node must agree.
	WorldSize int
	// Fingerprint summarizes what the node loaded (config hash, backend, cache geometry);
	// every node must agree.
	Fingerprint string
	// Timeout bounds the rendezvous: how long the leader waits for every follower, and a
	// follower keeps retrying the leader (default 10 minutes).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Model is what the cluster runs on each node: core/model's *Model (or anything with
// the engine's model methods).
type Model interface {
	Forward(ctx context.Context, seqs []model.Seq) ([][]float32, error)
	BlockSize() int
	NumBlocks() int
	VocabSize() int
	MaxSeqLen() int
}

// ErrLeaderGone is returned by Follower.Serve when the leader's connection dropped
// without a goodbye (the leader process died or the network failed).
var ErrLeaderGone = errors.New("cluster: the leader went away")

// hello is a follower's first message.
type hello struct {
	Version                     int
	NodeRank, NNodes, WorldSize int
	Fingerprint                 string
}

// welcome is the leader's answer: an error, or the root info.
type welcome struct {
	Err  string
	Root []byte
}

// step is one engine step, or (Bye) the end of the session.
type step struct {
	ID   uint64
	Seqs []model.Seq
	Bye  bool
}

// ack is a follower's answer to a step.
type ack struct {
	ID  uint64
	Err string
}

func (c *Config) check() error {
	if c.NNodes < 2 {
		return fmt.Errorf("cluster: %d nodes: a cluster needs at least 2", c.NNodes)
	}
	if c.NodeRank < 0 || c.NodeRank >= c.NNodes {
		return fmt.Errorf("cluster: node rank %d outside [0, %d)", c.NodeRank, c.NNodes)
	}
	if c.Addr == "" {
		return errors.New("cluster: no init address (--dist-init-addr host:port)")
	}
	if c.WorldSize < c.NNodes || c.WorldSize%c.NNodes != 0 {
		return fmt.Errorf("cluster: world size %d is not divisible by %d nodes", c.WorldSize, c.NNodes)
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// mismatch compares a follower's hello with the leader's configuration.
func (c *Config) mismatch(h hello) string {
	switch {
	case h.Version != protocolVersion:
		return fmt.Sprintf("node %d speaks cluster protocol %d, the leader %d (run the same gateway build on every node)", h.NodeRank, h.Version, protocolVersion)
	case h.NNodes != c.NNodes:
		return fmt.Sprintf("node %d says --nnodes %d, the leader %d", h.NodeRank, h.NNodes, c.NNodes)
	case h.NodeRank < 1 || h.NodeRank >= c.NNodes:
		return fmt.Sprintf("node rank %d outside [1, %d)", h.NodeRank, c.NNodes)
	case h.WorldSize != c.WorldSize:
		return fmt.Sprintf("node %d says world size %d, the leader %d", h.NodeRank, h.WorldSize, c.WorldSize)
	case h.Fingerprint != c.Fingerprint:
		return fmt.Sprintf("node %d loaded something else than the leader (its fingerprint %q, the leader's %q): use the same checkpoint, config and model flags on every node",
			h.NodeRank, h.Fingerprint, c.Fingerprint)
	}
	return ""
}

// closeOnDone closes c when ctx ends, until the returned stop is called.
func closeOnDone(ctx context.Context, c interface{ Close() error }) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = c.Close() })
}

// peer is one follower's connection on the leader.
type peer struct {
	node int
	conn net.Conn
	enc  *gob.Encoder
	dec  *gob.Decoder
}

// Leader is node 0's side of the cluster. Its Forward runs one step on every node; it
// satisfies core/engine's Model. Close says goodbye to the followers.
type Leader struct {
	m     Model
	log   *slog.Logger
	peers []*peer
	acks  chan ackFrom

	mu      sync.Mutex // serializes Forward and Close; guards next
	next    uint64
	closed  bool
	closing atomic.Bool // Close has begun: connections closing are expected

	failOnce sync.Once
	dead     chan struct{} // closed on the first failure
	cause    error         // set before dead is closed
}

type ackFrom struct {
	node int
	ack  ack
}

// Lead runs node 0's rendezvous: it listens on cfg.Addr until every follower has
// connected and agreed, calls newRoot (HcclGetRootInfo) and sends the root info to
// them. It returns the root info and a Leader; call Leader.Attach with the loaded model
// before serving.
func Lead(ctx context.Context, cfg Config, newRoot func() ([]byte, error)) (*Leader, []byte, error) {
	if err := cfg.check(); err != nil {
		return nil, nil, err
	}
	if cfg.NodeRank != 0 {
		return nil, nil, fmt.Errorf("cluster: Lead on node %d (only node 0 leads)", cfg.NodeRank)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: listen on --dist-init-addr %s: %w", cfg.Addr, err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	stop := closeOnDone(ctx, ln)
	defer stop()
	cfg.Logger.Info("cluster: waiting for the other nodes", "addr", ln.Addr().String(), "nnodes", cfg.NNodes)
	l := &Leader{log: cfg.Logger, acks: make(chan ackFrom, 16*cfg.NNodes), dead: make(chan struct{})}
	byNode := map[int]*peer{}
	fail := func(err error) (*Leader, []byte, error) {
		for _, p := range byNode {
			_ = p.conn.Close()
		}
		return nil, nil, err
	}
	for len(byNode) < cfg.NNodes-1 {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return fail(fmt.Errorf("cluster: %d of %d followers joined at %s before %w", len(byNode), cfg.NNodes-1, cfg.Addr, context.Cause(ctx)))
			}
			return fail(fmt.Errorf("cluster: accept: %w", err))
		}
		p := &peer{conn: conn, enc: gob.NewEncoder(conn), dec: gob.NewDecoder(conn)}
		var h hello
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if err := p.dec.Decode(&h); err != nil {
			cfg.Logger.Warn("cluster: ignoring a connection that did not say hello", "remote", conn.RemoteAddr().String(), "err", err)
			_ = conn.Close()
			continue
		}
		why := cfg.mismatch(h)
		if why == "" && byNode[h.NodeRank] != nil {
			why = fmt.Sprintf("two nodes say --node-rank %d", h.NodeRank)
		}
		if why != "" {
			_ = p.enc.Encode(welcome{Err: why})
			_ = conn.Close()
			return fail(fmt.Errorf("cluster: rendezvous refused: %s", why))
		}
		p.node = h.NodeRank
		byNode[h.NodeRank] = p
		cfg.Logger.Info("cluster: node joined", "node_rank", h.NodeRank, "remote", conn.RemoteAddr().String())
	}
	root, err := newRoot()
	if err != nil {
		for _, p := range byNode {
			_ = p.enc.Encode(welcome{Err: "the leader could not make the root info: " + err.Error()})
		}
		return fail(fmt.Errorf("cluster: root info: %w", err))
	}
	for n := 1; n < cfg.NNodes; n++ {
		p := byNode[n]
		if err := p.enc.Encode(welcome{Root: root}); err != nil {
			return fail(fmt.Errorf("cluster: send the root info to node %d: %w", n, err))
		}
		_ = p.conn.SetDeadline(time.Time{})
		l.peers = append(l.peers, p)
	}
	return l, root, nil
}

// Attach sets the leader's model (its local ranks) and starts watching the followers.
// Call it once, after the model has loaded.
func (l *Leader) Attach(m Model) {
	l.m = m
	for _, p := range l.peers {
		go l.read(p)
	}
}

// read receives one follower's acks until its connection fails.
func (l *Leader) read(p *peer) {
	for {
		var a ack
		if err := p.dec.Decode(&a); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
				err = fmt.Errorf("connection closed: the node stopped or died (%w)", err)
			}
			l.fail(fmt.Errorf("cluster: lost node %d (%s): %w", p.node, p.conn.RemoteAddr(), err))
			return
		}
		select {
		case l.acks <- ackFrom{p.node, a}:
		case <-l.dead:
			return
		}
	}
}

// fail records the first failure and closes every connection, so followers stop too.
func (l *Leader) fail(err error) {
	l.failOnce.Do(func() {
		l.cause = err
		close(l.dead)
		for _, p := range l.peers {
			_ = p.conn.Close()
		}
		if !l.closing.Load() {
			l.log.Error("cluster: stopped", "err", err)
		}
	})
}

// Err returns the failure that stopped the cluster, or nil.
func (l *Leader) Err() error {
	select {
	case <-l.dead:
		return l.cause
	default:
		return nil
	}
}

// Forward sends the step to every follower, runs it on the leader's ranks and waits
// for every follower's acknowledgement. Any node's failure is the step's error. The
// step runs to its end even if ctx is cancelled: stopping one node mid-step would leave
// the others waiting in a collective.
func (l *Leader) Forward(ctx context.Context, seqs []model.Seq) ([][]float32, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("cluster: forward after Close")
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	l.next++
	id := l.next
	for _, p := range l.peers {
		_ = p.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := p.enc.Encode(step{ID: id, Seqs: seqs}); err != nil {
			l.fail(fmt.Errorf("cluster: send step to node %d: %w", p.node, err))
			return nil, l.cause
		}
	}
	type result struct {
		out [][]float32
		err error
	}
	local := make(chan result, 1)
	go func() {
		out, err := l.m.Forward(context.WithoutCancel(ctx), seqs)
		local <- result{out, err}
	}()
	var res *result
	var remote error
	for pending := len(l.peers); pending > 0 || res == nil; {
		select {
		case r := <-local:
			res = &r
		case a := <-l.acks:
			if a.ack.ID != id {
				l.fail(fmt.Errorf("cluster: node %d acknowledged step %d during step %d", a.node, a.ack.ID, id))
				return nil, l.cause
			}
			if a.ack.Err != "" && remote == nil {
				remote = fmt.Errorf("cluster: node %d: %s", a.node, a.ack.Err)
			}
			pending--
		case <-l.dead:
			return nil, l.cause
		}
	}
	if res.err != nil {
		if remote != nil {
			return nil, fmt.Errorf("%w (leader: %v)", remote, res.err)
		}
		return nil, res.err
	}
	if remote != nil {
		return nil, remote
	}
	return res.out, nil
}

// BlockSize returns the model's KV block size.
func (l *Leader) BlockSize() int { return l.m.BlockSize() }

// NumBlocks returns the model's number of KV blocks.
func (l *Leader) NumBlocks() int { return l.m.NumBlocks() }

// VocabSize returns the model's vocabulary size.
func (l *Leader) VocabSize() int { return l.m.VocabSize() }

// MaxSeqLen returns the model's longest sequence.
func (l *Leader) MaxSeqLen() int { return l.m.MaxSeqLen() }

// Close tells the followers the session is over (they return nil from Serve) and
// closes the connections. Call it after the engine has stopped calling Forward.
func (l *Leader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.closing.Store(true)
	var errs []error
	if l.Err() == nil {
		for _, p := range l.peers {
			_ = p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := p.enc.Encode(step{Bye: true}); err != nil {
				errs = append(errs, fmt.Errorf("cluster: goodbye to node %d: %w", p.node, err))
			}
		}
	}
	l.fail(errors.New("cluster: closed"))
	for _, p := range l.peers {
		_ = p.conn.Close()
	}
	return errors.Join(errs...)
}

// Follower is a node > 0's side of the cluster.
type Follower struct {
	cfg  Config
	conn net.Conn
	enc  *gob.Encoder
	dec  *gob.Decoder
}

// Follow runs a follower's rendezvous: it dials the leader at cfg.Addr (retrying until
// cfg.Timeout), introduces itself and returns the root info the leader sent.
func Follow(ctx context.Context, cfg Config) (*Follower, []byte, error) {
	if err := cfg.check(); err != nil {
		return nil, nil, err
	}
	if cfg.NodeRank == 0 {
		return nil, nil, errors.New("cluster: Follow on node 0 (node 0 leads)")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var d net.Dialer
	var conn net.Conn
	var err error
	cfg.Logger.Info("cluster: connecting to the leader", "addr", cfg.Addr, "node_rank", cfg.NodeRank)
	for {
		if conn, err = d.DialContext(ctx, "tcp", cfg.Addr); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("cluster: node %d could not reach the leader at %s: %w", cfg.NodeRank, cfg.Addr, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	stop := closeOnDone(ctx, conn)
	defer stop()
	f := &Follower{cfg: cfg, conn: conn, enc: gob.NewEncoder(conn), dec: gob.NewDecoder(conn)}
	err = f.enc.Encode(hello{Version: protocolVersion, NodeRank: cfg.NodeRank, NNodes: cfg.NNodes, WorldSize: cfg.WorldSize, Fingerprint: cfg.Fingerprint})
	var w welcome
	if err == nil {
		err = f.dec.Decode(&w)
	}
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, nil, fmt.Errorf("cluster: rendezvous with the leader at %s: %w", cfg.Addr, err)
	}
	if w.Err != "" {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("cluster: the leader refused node %d: %s", cfg.NodeRank, w.Err)
	}
	return f, w.Root, nil
}

// Serve runs the leader's steps on m until the leader says goodbye (nil), the leader
// goes away (ErrLeaderGone), ctx ends (its cause) or the connection fails. A step's
// error is sent to the leader, and serving goes on.
func (f *Follower) Serve(ctx context.Context, m Model) error {
	stop := closeOnDone(ctx, f.conn)
	defer stop()
	defer f.conn.Close()
	for {
		var s step
		if err := f.dec.Decode(&s); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("%w: %v", ErrLeaderGone, err)
		}
		if s.Bye {
			return nil
		}
		_, err := m.Forward(context.WithoutCancel(ctx), s.Seqs)
		a := ack{ID: s.ID}
		if err != nil {
			a.Err = err.Error()
			f.cfg.Logger.Warn("cluster: step failed", "step", s.ID, "err", err)
		}
		_ = f.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := f.enc.Encode(a); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("%w: acknowledge step %d: %v", ErrLeaderGone, s.ID, err)
		}
	}
}

// Close closes the connection to the leader.
func (f *Follower) Close() error { return f.conn.Close() }
