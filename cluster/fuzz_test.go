package cluster

import (
	"bytes"
	"context"
	"encoding/gob"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dsgate/dsgate/core/model"
)

// gobBytes encodes msgs as one gob stream (fuzz seeds).
func gobBytes(t testing.TB, msgs ...any) []byte {
	var b bytes.Buffer
	enc := gob.NewEncoder(&b)
	for _, m := range msgs {
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// FuzzFollowerServe feeds arbitrary bytes to a follower as if from the leader: Serve
// must return (nil for a goodbye, else an error), never panic or hang, and run only
// the steps it could decode.
func FuzzFollowerServe(f *testing.F) {
	f.Add(gobBytes(f, step{ID: 1, Seqs: []model.Seq{{Tokens: []int32{1, 2}, Blocks: []int32{0}}}}, step{Bye: true}))
	f.Add(gobBytes(f, step{ID: 7, Seqs: []model.Seq{{Tokens: []int32{3}, Pos: 5, Blocks: []int32{0, 1}, AllLogits: true}}}))
	f.Add([]byte{0x07, 0xff, 0x82, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		leaderEnd, followerEnd := net.Pipe()
		fl := &Follower{cfg: Config{Logger: nil}, conn: followerEnd, enc: gob.NewEncoder(followerEnd), dec: gob.NewDecoder(followerEnd)}
		_ = fl.cfg.check() // defaults (logger)
		go func() {
			_ = leaderEnd.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = leaderEnd.Write(data)
			_ = leaderEnd.Close()
		}()
		done := make(chan error, 1)
		m := &fakeModel{node: 1}
		go func() { done <- fl.Serve(context.Background(), m) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after the leader's bytes ended")
		}
	})
}

// FuzzLeaderHello: a connection that sends arbitrary bytes during the rendezvous is
// ignored (not a hello: the real follower then joins), refused with a reason (a hello
// that does not match), or, when it is a matching hello from a process that is gone at
// once, taken as that node, whose loss the first step then reports. The leader never
// panics or hangs.
func FuzzLeaderHello(f *testing.F) {
	f.Add(gobBytes(f, hello{Version: protocolVersion, NodeRank: 1, NNodes: 2, WorldSize: 4, Fingerprint: "x"}))
	f.Add(gobBytes(f, hello{Version: protocolVersion, NodeRank: 1, NNodes: 2, WorldSize: 4, Fingerprint: "cfg"}))
	f.Add(gobBytes(f, hello{Version: protocolVersion + 1, NodeRank: 5}))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(fuzzLeaderHelloBody)
}

func fuzzLeaderHelloBody(t *testing.T, data []byte) {
	addr := freeAddr(t)
	cfg := Config{NNodes: 2, NodeRank: 0, Addr: addr, WorldSize: 4, Fingerprint: "cfg", Timeout: 5 * time.Second}
	type led struct {
		l   *Leader
		err error
	}
	lead := make(chan led, 1)
	go func() {
		l, _, err := Lead(context.Background(), cfg, func() ([]byte, error) { return []byte("root"), nil })
		lead <- led{l, err}
	}()
	var conn net.Conn
	var err error
	for range 100 {
		if conn, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, _ = conn.Write(data)
	_ = conn.Close()

	fcfg := cfg
	fcfg.NodeRank = 1
	fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	type joined struct {
		f    *Follower
		root []byte
		err  error
	}
	follow := make(chan joined, 1)
	go func() {
		fl, root, err := Follow(fctx, fcfg)
		follow <- joined{fl, root, err}
	}()
	var r led
	select {
	case r = <-lead:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader's rendezvous hung")
	}
	if r.err != nil {
		cancel() // the follower would retry a leader that is gone
		if !strings.Contains(r.err.Error(), "cluster:") {
			t.Fatalf("leader failed with %v", r.err)
		}
	}
	j := <-follow
	if j.f != nil {
		defer j.f.Close()
	}
	if r.err != nil {
		return
	}
	defer r.l.Close()
	if j.err == nil {
		if string(j.root) != "root" {
			t.Fatalf("follower got root %q", j.root)
		}
		return
	}
	// The leader took the fuzz connection (a matching hello) as node 1.
	r.l.Attach(&fakeModel{})
	done := make(chan error, 1)
	go func() {
		_, err := r.l.Forward(context.Background(), []model.Seq{{Tokens: []int32{1}, Blocks: []int32{0}}})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the leader ran a step with a node that is gone")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a step with a node that is gone hung")
	}
}
