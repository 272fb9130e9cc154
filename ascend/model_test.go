//go:build cgo

package ascend_test

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/dsgate/dsgate/ascend"
	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/convert"
	"github.com/dsgate/dsgate/core/model"
)

// Integration (test-only import of core/model): the whole forward pass on the emulated
// NPUs equals the CPU backend on the golden tiny checkpoints of core/model.

func l2rel(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / den)
}

func loadModel(t *testing.T, name string, opt model.Options) *model.Model {
	t.Helper()
	dir := name
	if !filepath.IsAbs(name) {
		dir = filepath.Join("..", "core", "model", "testdata", name)
	}
	cfg, err := configs.FromCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	opt.BlockSize, opt.NumBlocks = 4, 32
	m, err := model.Load(context.Background(), dir, cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var ids = []int32{0, 17, 301, 44, 5, 260, 99, 3, 421, 8, 77}

func emuHome(t *testing.T) string {
	t.Helper()
	home, err := filepath.Abs(filepath.Join("emu", "build"))
	if err != nil {
		t.Fatal(err)
	}
	return home
}

// compare loads ckpt with the CPU and the Ascend backend and returns the worst relative
// L2 error of the logits over every position of ids.
func compare(t *testing.T, ckpt string, world int, precision string) float64 {
	t.Helper()
	cpu := loadModel(t, ckpt, model.Options{WorldSize: world})
	npu := loadModel(t, ckpt, model.Options{WorldSize: world, Backend: "ascend",
		Factory: ascend.New(ascend.Options{CANNHome: emuHome(t), Precision: precision})})
	want, err := cpu.Logits(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	got, err := npu.Logits(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i := range want {
		worst = math.Max(worst, l2rel(got[i], want[i]))
	}
	// Decode through the paged cache: prefill, then 4 greedy steps fed with the CPU's token.
	blocks := []int32{5, 2, 7, 1}
	ctx := context.Background()
	seq := []model.Seq{{Tokens: ids[:6], Blocks: blocks}}
	for step := 0; step < 5; step++ {
		w, err := cpu.Forward(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		g, err := npu.Forward(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		worst = math.Max(worst, l2rel(g[0], w[0]))
		next := int32(0)
		for i, v := range w[0] {
			if v > w[0][next] {
				next = int32(i)
			}
		}
		seq = []model.Seq{{Tokens: []int32{next}, Pos: seq[0].Pos + len(seq[0].Tokens), Blocks: blocks}}
	}
	return worst
}

// TestQuantizedLogitsMatchCPUBackend converts the v3 golden checkpoint with convert
// (bf16, int8, int4 per-channel and per-group) for W ranks and compares both backends.
func TestQuantizedLogitsMatchCPUBackend(t *testing.T) {
	in := filepath.Join("..", "core", "model", "testdata", "v3")
	for _, tc := range []struct {
		mode  string
		group int
		world int
	}{{"bf16-bf16", 0, 2}, {"bf16-int8", 0, 1}, {"bf16-int8", 0, 2}, {"bf16-int4", 0, 2}, {"bf16-int4", 32, 1}, {"bf16-int4", 32, 2}} {
		t.Run(fmt.Sprintf("%s-g%d-mp%d", tc.mode, tc.group, tc.world), func(t *testing.T) {
			out := t.TempDir()
			if _, err := convert.Run(context.Background(), convert.Options{Mode: tc.mode, In: in, Out: out, MP: tc.world, GroupSize: tc.group}); err != nil {
				t.Fatal(err)
			}
			if e := compare(t, out, tc.world, "f32"); e > 1e-3 {
				t.Errorf("f32 precision: worst rel err %.3g > 1e-3", e)
			} else {
				t.Logf("f32 precision: worst rel err %.3g", e)
			}
			// bf16 precision runs aclnnWeightQuantBatchMatmulV2 on the packed weights.
			if e := compare(t, out, tc.world, "bf16"); e > 0.25 {
				t.Errorf("bf16 precision: worst rel err %.3g > 0.25", e)
			} else {
				t.Logf("bf16 precision: worst rel err %.3g", e)
			}
		})
	}
}

func TestLogitsMatchCPUBackend(t *testing.T) {
	for _, tc := range []struct {
		ckpt      string
		world     int
		precision string
		tol       float64
	}{
		{"v3", 1, "f32", 1e-3}, {"v3", 2, "f32", 1e-3}, {"v3", 8, "f32", 1e-3}, {"v2", 2, "f32", 1e-3}, {"v3-fp8", 1, "f32", 1e-3},
		// bf16 precision rounds every matmul input (and the float32 test weights) to
		// bfloat16: ~1% per position, more where a router flips an expert choice.
		{"v3", 2, "bf16", 0.25}, {"v2", 1, "bf16", 0.25},
	} {
		t.Run(fmt.Sprintf("%s-W%d-%s", tc.ckpt, tc.world, tc.precision), func(t *testing.T) {
			worst := compare(t, tc.ckpt, tc.world, tc.precision)
			t.Logf("%s W=%d %s: worst relative L2 error over %d positions %.3g", tc.ckpt, tc.world, tc.precision, len(ids), worst)
			if worst > tc.tol {
				t.Fatalf("worst rel err %.3g > %.3g", worst, tc.tol)
			}
		})
	}
}
