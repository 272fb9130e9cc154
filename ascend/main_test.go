//go:build cgo

package ascend

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

// emuHome is the emulator's toolkit home, built by TestMain with make -C emu.
var emuHome string

func TestMain(m *testing.M) {
	if os.Getenv(childRootEnv) != "" { // a re-executed binary playing another process's rank
		os.Exit(multinodeChild())
	}
	out, err := exec.Command("make", "-C", "emu").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the CANN emulator failed: %v\n%s", err, out)
		os.Exit(1)
	}
	emuHome, err = filepath.Abs(filepath.Join("emu", "build"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// newGroupT returns an emulated group of w ranks, closed at the end of the test.
func newGroupT(t testing.TB, w int, precision string) []backend.Backend {
	t.Helper()
	bs, err := NewGroup(w, Options{CANNHome: emuHome, Precision: precision})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, b := range bs {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	return bs
}

func randF32(r *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64())
	}
	return out
}

// tensor makes a rows × cols tensor on b holding data.
func tensor(t testing.TB, b backend.Backend, rows, cols int, data []float32) backend.Tensor {
	t.Helper()
	x, err := b.NewTensor(rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	if data != nil {
		if err := b.Write(x, data); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func read(t testing.TB, b backend.Backend, x backend.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Rows()*x.Cols())
	if err := b.Read(x, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// quantWeight returns a random I8/I4 weight (N × K, group size g) and the int values it
// packs ([K][N]).
func quantWeight(r *rand.Rand, d backend.DType, n, k, g int) (*backend.HostWeight, []int8) {
	return backend.RandomQuant(r, d, n, k, g)
}
