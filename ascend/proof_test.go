//go:build cgo

package ascend

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
	"go.uber.org/goleak"
)

// The emulator exists to catch the bugs below; each test shows that the bug makes a
// call fail or a result differ from the reference, and that the correct use passes.

func rankOf(t *testing.T, b backend.Backend) *Backend {
	t.Helper()
	a, ok := b.(*Backend)
	if !ok {
		t.Fatalf("%T is not *Backend", b)
	}
	return a
}

func TestMissingSynchronizeReadsStaleData(t *testing.T) {
	b := rankOf(t, newGroupT(t, 1, "bf16")[0])
	// Values no other test writes: freed device memory is reused, and a buffer that still
	// holds another test's {1, 2, 3, 4} would look like work that ran early.
	data := []float32{1017.25, 2029.5, 3041.75, 4053, 5065.25, 6077.5}
	x := tensor(t, b, 2, 3, data).(*Tensor)
	got := make([]float32, 6)
	// A D2H copy without aclrtSynchronizeStream: the queued H2D copy has not run yet.
	if err := b.do(func() error { return b.w.peek(unsafe.Pointer(&got[0]), x.addr(0, 0), 24) }); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v == data[i] {
			t.Fatalf("without a synchronize the host read %v; the emulator must not run queued work early", got)
		}
	}
	// Through Read (which synchronizes) the data is there.
	if out := read(t, b, x); relErr(out, data) != 0 {
		t.Fatalf("after synchronize got %v, want %v", out, data)
	}
	// The same holds for operator output.
	o := tensor(t, b, 2, 3, nil).(*Tensor)
	if err := b.Add(o, x, x); err != nil {
		t.Fatal(err)
	}
	if err := b.do(func() error { return b.w.peek(unsafe.Pointer(&got[0]), o.addr(0, 0), 24) }); err != nil {
		t.Fatal(err)
	}
	if got[0] == 2*data[0] {
		t.Fatal("aclnnAdd ran before the stream was synchronized")
	}
	if out := read(t, b, o); out[5] != 2*data[5] {
		t.Fatalf("after synchronize add gave %v", out)
	}
}

func TestHostReadOfDeviceMemoryFaults(t *testing.T) {
	b := rankOf(t, newGroupT(t, 1, "bf16")[0])
	x := tensor(t, b, 1, 4, []float32{7, 7, 7, 7}).(*Tensor)
	_ = read(t, b, x)
	addr := uintptr(x.addr(0, 0))
	fault := func() (err error) {
		old := debug.SetPanicOnFault(true)
		defer debug.SetPanicOnFault(old)
		defer func() {
			if p := recover(); p != nil {
				if re, ok := p.(runtime.Error); ok {
					err = re
					return
				}
				panic(p)
			}
		}()
		p := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
		v := *(*float32)(p) // a host dereference of a device pointer
		t.Errorf("host read of device memory returned %v instead of faulting", v)
		return nil
	}()
	fa, ok := fault.(interface{ Addr() uintptr })
	if !ok || fa.Addr() != addr {
		t.Fatalf("want a memory fault at %#x, got %v", addr, fault)
	}
}

func TestUndersizedWorkspaceAndRepeatedPhase2Fail(t *testing.T) {
	b := rankOf(t, newGroupT(t, 1, "bf16")[0])
	r := rand.New(rand.NewPCG(3, 4))
	hw, _ := quantWeight(r, backend.I8, 16, 32, 0)
	w, err := b.LoadWeight(hw)
	if err != nil {
		t.Fatal(err)
	}
	x := tensor(t, b, 2, 32, randF32(r, 64))
	o := tensor(t, b, 2, 16, nil)
	set := func(shrink uint64, replay bool) {
		if err := b.do(func() error {
			b.w.hookOp, b.w.wsShrink, b.w.replay = "aclnnWeightQuantBatchMatmulV2", shrink, replay
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		shrink  uint64
		replay  bool
		wantMsg string
	}{
		{"workspace one byte short", 1, false, "smaller than"},
		{"phase 2 twice", 0, true, "phase 2 was already called"},
	} {
		set(tc.shrink, tc.replay)
		err := b.Linear(o, x, w)
		set(0, false)
		var ae *Error
		if !errors.As(err, &ae) || ae.Op != "aclnnWeightQuantBatchMatmulV2" || !strings.Contains(ae.Msg, tc.wantMsg) {
			t.Errorf("%s: got %v, want an *Error from aclnnWeightQuantBatchMatmulV2 containing %q", tc.name, err, tc.wantMsg)
		}
		_ = b.Sync()
	}
	if err := b.Linear(o, x, w); err != nil {
		t.Fatalf("correct protocol failed: %v", err)
	}
	_ = read(t, b, o)
}

// packHighFirst packs int4 values [K][N] with the nibble order reversed (element 8c+j in
// bits 28−4j): the converter bug the emulator must expose.
func packHighFirst(vals []int8, k, n int) []byte {
	out := make([]byte, k*n/2)
	for r := 0; r < k; r++ {
		for c := 0; c < n/8; c++ {
			var word uint32
			for j := 0; j < 8; j++ {
				word |= uint32(uint8(vals[r*n+c*8+j])&0xF) << (28 - 4*uint(j))
			}
			i := (r*(n/8) + c) * 4
			out[i], out[i+1], out[i+2], out[i+3] = byte(word), byte(word>>8), byte(word>>16), byte(word>>24)
		}
	}
	return out
}

func TestWrongInt4PackingIsCaught(t *testing.T) {
	b := newGroupT(t, 1, "bf16")[0]
	r := rand.New(rand.NewPCG(5, 6))
	const n, k = 32, 48
	hw, vals := quantWeight(r, backend.I4, n, k, 0)
	xv := randF32(r, 2*k)
	// Expected y = x · dequant(vals)ᵀ computed directly from the int values.
	want := make([]float32, 2*n)
	for i := 0; i < 2; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += float64(xv[i*k+p]) * float64(vals[p*n+j]) * float64(hw.Scale[j])
			}
			want[i*n+j] = float32(s)
		}
	}
	run := func(q []byte) float64 {
		h := *hw
		h.Q = q
		w, err := b.LoadWeight(&h)
		if err != nil {
			t.Fatal(err)
		}
		o := tensor(t, b, 2, n, nil)
		if err := b.Linear(o, tensor(t, b, 2, k, xv), w); err != nil {
			t.Fatal(err)
		}
		return relErr(read(t, b, o), want)
	}
	if e := run(backend.PackQuant(backend.I4, vals, k, n)); e > 2e-2 {
		t.Fatalf("documented packing (low nibble first): rel err %.3g", e)
	}
	if e := run(packHighFirst(vals, k, n)); e < 0.3 {
		t.Fatalf("high-nibble-first packing gave rel err %.3g; the emulator must read nibbles low first", e)
	}
}

func TestMatrixOverSizeLimit(t *testing.T) {
	b := rankOf(t, newGroupT(t, 1, "bf16")[0])
	ref := backend.NewReference(0, backend.NewComm(1))
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		d    backend.DType
		n, k int
	}{{backend.I8, 8, 70000}, {backend.I4, 65544, 32}} {
		hw, _ := quantWeight(r, tc.d, tc.n, tc.k, 0)
		w, err := b.LoadWeight(hw)
		if err != nil {
			t.Fatal(err)
		}
		// One unsplit aclnnWeightQuantBatchMatmulV2 call is rejected with the documented limit.
		err = b.do(func() error {
			xb, err := b.tmp(1, tc.k, dtBF16)
			if err != nil {
				return err
			}
			yb, err := b.tmp(1, tc.n, dtBF16)
			if err != nil {
				return err
			}
			return b.wqbmm(xb, w.(*Weight), 0, tc.k, 0, tc.n, yb)
		})
		if err == nil || !strings.Contains(err.Error(), "65535") {
			t.Fatalf("%v %dx%d: unsplit call gave %v, want the k,n ≤ 65535 error", tc.d, tc.n, tc.k, err)
		}
		// Linear splits the matrix and matches the reference.
		xv := randF32(r, tc.k)
		x, o := tensor(t, b, 1, tc.k, xv), tensor(t, b, 1, tc.n, nil)
		if err := b.Linear(o, x, w); err != nil {
			t.Fatal(err)
		}
		rw, _ := ref.LoadWeight(hw)
		rx, _ := ref.NewTensor(1, tc.k)
		_ = ref.Write(rx, xv)
		ro, _ := ref.NewTensor(1, tc.n)
		if err := ref.Linear(ro, rx, rw); err != nil {
			t.Fatal(err)
		}
		if e := relErr(read(t, b, o), ro.(*backend.HostTensor).Data); e > 2e-2 {
			t.Fatalf("%v %dx%d split linear: rel err %.3g", tc.d, tc.n, tc.k, e)
		}
	}
}

func TestCollectivesWaitForEveryRank(t *testing.T) {
	bs := newGroupT(t, 2, "bf16")
	x0 := tensor(t, bs[0], 1, 3, []float32{1, 2, 3})
	x1 := tensor(t, bs[1], 1, 3, []float32{10, 20, 30})
	done := make(chan []float32, 1)
	go func() {
		out := make([]float32, 3)
		if err := bs[0].AllReduce(x0); err != nil {
			t.Error(err)
		}
		if err := bs[0].Read(x0, out); err != nil {
			t.Error(err)
		}
		done <- out
	}()
	select {
	case out := <-done:
		t.Fatalf("rank 0's all-reduce finished (%v) before rank 1 joined", out)
	case <-time.After(300 * time.Millisecond):
	}
	if err := bs[1].AllReduce(x1); err != nil {
		t.Fatal(err)
	}
	if out := read(t, bs[1], x1); relErr(out, []float32{11, 22, 33}) != 0 {
		t.Fatalf("rank 1 got %v", out)
	}
	if out := <-done; relErr(out, []float32{11, 22, 33}) != 0 {
		t.Fatalf("rank 0 got %v", out)
	}
}

func TestCollectiveTimesOutWhenARankIsMissing(t *testing.T) {
	t.Setenv("DSGATE_EMU_HCCL_TIMEOUT_MS", "200")
	bs := newGroupT(t, 2, "bf16")
	x := tensor(t, bs[0], 1, 2, []float32{1, 2})
	err := bs[0].AllReduce(x)
	var ae *Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Msg, "HcclAllReduce") || !strings.Contains(ae.Msg, "waited") {
		t.Fatalf("got %v, want a timed-out HcclAllReduce", err)
	}
}

func TestNewWithoutCANNListsEverythingMissing(t *testing.T) {
	_, err := NewGroup(1, Options{CANNHome: t.TempDir()})
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("got %v, want *LoadError", err)
	}
	if len(le.MissingLibraries) != 4 || len(le.MissingSymbols) != len(symbols) {
		t.Fatalf("missing %d libraries and %d symbols, want 4 and %d: %v", len(le.MissingLibraries), len(le.MissingSymbols), len(symbols), err)
	}
	for _, s := range []string{"libascendcl.so", "libnnopbase.so", "libopapi.so", "libhccl.so", "aclrtSetDevice", "aclnnWeightQuantBatchMatmulV2GetWorkspaceSize", "HcclAllReduce"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not name %s: %v", s, err)
		}
	}
}

func TestSymbolTable(t *testing.T) {
	if len(symbols) != symbolCount {
		t.Fatalf("%d Go symbols, %d C slots", len(symbols), symbolCount)
	}
	seen := map[string]bool{}
	idx := map[int]bool{}
	for _, s := range symbols {
		if seen[s.name] || idx[int(s.idx)] {
			t.Fatalf("duplicate symbol %s / slot %d", s.name, s.idx)
		}
		seen[s.name], idx[int(s.idx)] = true, true
	}
}

func TestDoReturnsPanicsAndErrors(t *testing.T) {
	b := rankOf(t, newGroupT(t, 1, "bf16")[0])
	if err := b.do(func() error { panic("boom") }); err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Fatalf("got %v", err)
	}
	// Shape errors are checked in Go before any CANN call.
	if err := b.Add(tensor(t, b, 2, 2, nil), tensor(t, b, 2, 2, nil), tensor(t, b, 3, 2, nil)); err == nil {
		t.Fatal("mismatched add accepted")
	}
	// A CANN error names the operator and carries aclGetRecentErrMsg().
	x := tensor(t, b, 1, 4, nil)
	err := b.do(func() error {
		v := x.(*Tensor).mat()
		v.dims = []int64{1, 400} // view beyond its allocation
		return b.cast(v, v)
	})
	var ae *Error
	if !errors.As(err, &ae) || ae.Op != "aclnnCastGetWorkspaceSize" || !strings.Contains(ae.Msg, "beyond its storage") {
		t.Fatalf("got %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(x, x, x); !errors.Is(err, errClosed) {
		t.Fatalf("after Close got %v", err)
	}
	_ = math.Pi
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	bs, err := NewGroup(2, Options{CANNHome: emuHome})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		x := tensor(t, b, 2, 2, []float32{1, 2, 3, 4})
		_ = read(t, b, x)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}
