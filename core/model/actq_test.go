package model

import (
	"context"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/convert"
	"github.com/dsgate/dsgate/core/cpu"
)

// TestQuantizedActivationsAccuracy: int4 checkpoints on the CPU backend's int8-activation
// kernels (cpu.Options.QuantizeActivations) stay as close to the bf16 logits as the
// float kernels do — the activations' rounding is small next to the int4 weights' —
// and they really run (the logits are not bit-identical to the float kernels'). A
// position may flip an expert choice (top-k ties on these tiny random models move a
// whole position's logits), so the checks use the mean cosine and the share of
// positions that agree, not the worst position.
func TestQuantizedActivationsAccuracy(t *testing.T) {
	if !cpu.QuantizeActivationsAvailable() {
		t.Skip("no int8-activation kernel on this CPU (it needs x86-64 with AVX2+FMA); the cpu package tests the refusal")
	}
	for _, name := range []string{"v3", "v2"} {
		g := loadGolden(t, name)
		seq := fullSeq(g)
		bf := writeBF16Copy(t, ckptDir(name))
		ref := logitsOf(t, bf, 1, seq)
		for _, group := range []int{0, 32} {
			dir := convertTo(t, bf, convert.ModeBF16Int4, 1, group)
			off := logitsOf(t, dir, 1, seq)
			cfg, err := configs.FromCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Load(context.Background(), dir, cfg, Options{NumBlocks: 16, BlockSize: 4,
				Factory: cpu.Factory(cpu.Options{QuantizeActivations: true})})
			if err != nil {
				t.Fatal(err)
			}
			on, err := m.Logits(context.Background(), seq)
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			var meanOff, meanOn float64
			agree, differ := 0, false
			for i := range ref {
				meanOff += cosine(off[i], ref[i]) / float64(len(ref))
				meanOn += cosine(on[i], ref[i]) / float64(len(ref))
				if cosine(on[i], off[i]) >= 0.9999 {
					agree++
				}
				for j := range on[i] {
					differ = differ || on[i][j] != off[i][j]
				}
			}
			t.Logf("%s int4 group %d: mean logits cosine vs bf16: float activations %.5f, int8 activations %.5f; %d of %d positions agree within cosine 0.9999",
				name, group, meanOff, meanOn, agree, len(ref))
			if !differ {
				t.Errorf("%s group %d: int8-activation logits are bit-identical to the float kernels': the kernel did not run", name, group)
			}
			if meanOn < meanOff-0.001 || agree < len(ref)*9/10 {
				t.Errorf("%s group %d: int8 activations lose accuracy: mean cosine %.5f vs %.5f (float); %d of %d positions agree", name, group, meanOn, meanOff, agree, len(ref))
			}
		}
	}
}
