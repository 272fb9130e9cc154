package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsgate/dsgate/core/cpu"
)

// TestLogitsCPUQuantizedActivations: --cpu-quantize-activations reaches the CPU kernels
// (an int4 checkpoint's logits move, slightly) and --cpu-threads does not change a bit;
// both are refused for another backend.
func TestLogitsCPUQuantizedActivations(t *testing.T) {
	const golden = "../core/model/testdata/v3"
	ckpt := filepath.Join(t.TempDir(), "int4")
	if _, stderr, code := runGW(t, "convert", "--mode", "bf16-int4", "--hf-ckpt-path", golden, "--save-path", ckpt, "--group-size", "32"); code != 0 {
		t.Fatalf("convert: %s", stderr)
	}
	ids := "0,17,42,99,7,311,5,64"
	logits := func(extra ...string) [][]float32 {
		t.Helper()
		out, stderr, code := runGW(t, append([]string{"logits", "--ckpt-path", ckpt, "--ids", ids, "--log-level", "error"}, extra...)...)
		if code != 0 {
			t.Fatalf("logits %v: exit %d: %s", extra, code, stderr)
		}
		return parseLogits(t, out)
	}
	if !cpu.QuantizeActivationsAvailable() {
		// No int8-activation kernel here (arm64, a !cgo build): the flag must be
		// refused with the reason, not ignored.
		_, stderr, code := runGW(t, "logits", "--ckpt-path", ckpt, "--ids", ids, "--cpu-quantize-activations")
		if code == 0 || !strings.Contains(stderr, "quantized activations need the avx2 kernels") {
			t.Fatalf("--cpu-quantize-activations without the kernel: exit %d: %s", code, stderr)
		}
		return
	}
	base, one, quant := logits(), logits("--cpu-threads", "1"), logits("--cpu-quantize-activations")
	moved := false
	for i := range base {
		for j := range base[i] {
			if one[i][j] != base[i][j] {
				t.Fatalf("--cpu-threads 1 changed logit [%d][%d]: %v vs %v", i, j, one[i][j], base[i][j])
			}
			moved = moved || quant[i][j] != base[i][j]
		}
		if e := relL2(quant[i], base[i]); e > 0.05 {
			t.Errorf("position %d: int8 activations moved the logits by %.3g (relative L2)", i, e)
		}
	}
	if !moved {
		t.Error("--cpu-quantize-activations left every logit bit-identical: it did not reach the kernels")
	}
	for _, args := range [][]string{
		{"logits", "--ckpt-path", ckpt, "--ids", ids, "--backend", "reference", "--cpu-quantize-activations"},
		{"logits", "--ckpt-path", ckpt, "--ids", ids, "--cpu-threads", "-1"},
	} {
		if _, stderr, code := runGW(t, args...); code == 0 || !strings.Contains(stderr, "--cpu-threads") {
			t.Errorf("%v: exit %d, stderr %q, want an error naming the flag", args, code, stderr)
		}
	}
}
