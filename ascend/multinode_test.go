//go:build cgo

package ascend

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRootInfoGroup(t *testing.T) {
	opt := Options{CANNHome: emuHome}
	root, err := NewRootInfo(opt)
	if err != nil {
		t.Fatal(err)
	}
	const world = 3
	ranks := make([]*Backend, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opt
			o.Devices = []int{r}
			ranks[r], errs[r] = NewRank(o, r, world, root)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	outs := make([][]float32, world)
	for r, b := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := tensor(t, b, 1, 2, []float32{float32(r), 1})
			if err := b.AllReduce(x); err != nil {
				t.Error(err)
				return
			}
			outs[r] = read(t, b, x)
		}()
	}
	wg.Wait()
	for r, o := range outs {
		if len(o) != 2 || o[0] != 3 || o[1] != 3 {
			t.Errorf("rank %d got %v, want [3 3]", r, o)
		}
	}
	for _, b := range ranks {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	}
}

// Environment of the re-executed test binary that plays rank 1 in another process.
const (
	childRootEnv = "DSGATE_ASCEND_TEST_CHILD_ROOT" // hex root info; set = child mode (TestMain)
	childHomeEnv = "DSGATE_ASCEND_TEST_CHILD_HOME"
	childDieEnv  = "DSGATE_ASCEND_TEST_CHILD_DIE" // "1": exit without closing after the collectives
)

// crossProcessOps runs the collectives both processes issue: an all-reduce of
// [1,2,3]·(10^rank) and an all-gather of [2r+1, 2r+2]; it returns both results.
func crossProcessOps(b *Backend) ([]float32, []float32, error) {
	r := float32(b.Rank())
	scale := float32(1)
	if r == 1 {
		scale = 10
	}
	x, err := b.NewTensor(1, 3)
	if err == nil {
		err = b.Write(x, []float32{scale, 2 * scale, 3 * scale})
	}
	if err == nil {
		err = b.AllReduce(x)
	}
	sum := make([]float32, 3)
	if err == nil {
		err = b.Read(x, sum)
	}
	in, err2 := b.NewTensor(1, 2)
	out, err3 := b.NewTensor(1, 4)
	err = errors.Join(err, err2, err3)
	if err == nil {
		err = b.Write(in, []float32{2*r + 1, 2*r + 2})
	}
	if err == nil {
		err = b.AllGather(out, in)
	}
	all := make([]float32, 4)
	if err == nil {
		err = b.Read(out, all)
	}
	return sum, all, err
}

// multinodeChild is rank 1 of a 2-rank world, in a process of its own (TestMain runs it
// when childRootEnv is set). It prints the collectives' results.
func multinodeChild() int {
	root, err := hex.DecodeString(os.Getenv(childRootEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b, err := NewRank(Options{CANNHome: os.Getenv(childHomeEnv), Devices: []int{0}}, 1, 2, root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	sum, all, err := crossProcessOps(b)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Printf("sum %v gather %v\n", sum, all)
	if os.Getenv(childDieEnv) == "1" {
		return 0 // exit without HcclCommDestroy, as a crashed node would
	}
	if err := b.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// Two OS processes form one communicator from a root info (the emulator's hub in this
// process, reached over TCP), all-reduce and all-gather; when the other process exits,
// this rank's next collective fails at once naming the rank that left, long before the
// HCCL timeout.
func TestRootInfoAcrossProcesses(t *testing.T) {
	t.Setenv("DSGATE_EMU_HCCL_TIMEOUT_MS", "30000")
	for _, tc := range []struct {
		name string
		die  bool
	}{{"collectives", false}, {"peer exits", true}} {
		t.Run(tc.name, func(t *testing.T) {
			opt := Options{CANNHome: emuHome, Devices: []int{0}}
			root, err := NewRootInfo(opt)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			die := "0"
			if tc.die {
				die = "1"
			}
			cmd.Env = append(os.Environ(), childRootEnv+"="+hex.EncodeToString(root), childHomeEnv+"="+emuHome, childDieEnv+"="+die)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			b, err := NewRank(opt, 0, 2, root)
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatal(err)
			}
			defer b.Close()
			sum, all, err := crossProcessOps(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v\n%s", err, stderr.String())
			}
			wantSum, wantAll := []float32{11, 22, 33}, []float32{1, 2, 3, 4}
			if relErr(sum, wantSum) != 0 || relErr(all, wantAll) != 0 {
				t.Fatalf("rank 0 got sum %v gather %v, want %v %v", sum, all, wantSum, wantAll)
			}
			if want := fmt.Sprintf("sum %v gather %v\n", wantSum, wantAll); stdout.String() != want {
				t.Fatalf("rank 1 printed %q, want %q", stdout.String(), want)
			}
			if !tc.die {
				return
			}
			start := time.Now()
			x := tensor(t, b, 1, 2, []float32{1, 2})
			err = b.AllReduce(x)
			var ae *Error
			if !errors.As(err, &ae) || !strings.Contains(ae.Msg, "rank 1 left the communicator") {
				t.Fatalf("after the peer exited: got %v, want an HcclAllReduce error naming rank 1", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("the failure took %v (the timeout, not the lost connection)", d)
			}
		})
	}
}

// A root info from another hub, a rank count that disagrees, or a rank arriving after
// the communicator formed is refused with a message, not a hang.
func TestRootInfoMismatchIsAnError(t *testing.T) {
	t.Setenv("DSGATE_EMU_HCCL_TIMEOUT_MS", "2000")
	opt := Options{CANNHome: emuHome, Devices: []int{0}}
	root, err := NewRootInfo(opt)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		o := opt
		o.Devices = []int{1}
		b, err := NewRank(o, 1, 2, root)
		if err == nil {
			b.Close()
		}
		done <- err
	}()
	_, err = NewRank(opt, 0, 3, root)
	err1 := <-done
	msgs := fmt.Sprint(err, err1)
	if err == nil || err1 == nil || strings.Count(msgs, "ranks, another said") != 2 {
		t.Fatalf("got %v and %v, want a rank-count mismatch", err, err1)
	}
	// A rank arriving after its communicator formed is refused at once.
	root2, err := NewRootInfo(opt)
	if err != nil {
		t.Fatal(err)
	}
	one, err := NewRank(opt, 0, 1, root2)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if _, err := NewRank(opt, 0, 1, root2); err == nil || !strings.Contains(err.Error(), "already formed") {
		t.Fatalf("a late rank: got %v, want a refusal", err)
	}
	bad := bytes.Clone(root)
	copy(bad[len("dsgate-emu-hub "):], "0")
	if _, err := NewRank(opt, 0, 1, bad); err == nil {
		t.Fatal("a root info naming another group was accepted")
	}
}
