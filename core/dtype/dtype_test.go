package dtype_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/dsgate/dsgate/core/dtype"
	"github.com/dsgate/dsgate/core/safetensors"
)

// golden reads a tensor of ../safetensors/testdata/golden_expect.safetensors, written
// by numpy/ml_dtypes (whose bfloat16, float16 and float8_e4m3fn casts match torch).
func golden(t *testing.T, name string) safetensors.Tensor {
	t.Helper()
	f, err := safetensors.OpenFile("../safetensors/testdata/golden_expect.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func TestRoundingAgainstReference(t *testing.T) {
	src, err := golden(t, "rne.src").Float32()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		conv func(float32) uint16
	}{
		{"rne.bf16", dtype.F32ToBF16},
		{"rne.f16", dtype.F32ToF16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := golden(t, tc.name).Uint16s()
			if err != nil {
				t.Fatal(err)
			}
			if len(want) != len(src) {
				t.Fatalf("%d refs for %d inputs", len(want), len(src))
			}
			for i, x := range src {
				if got := tc.conv(x); got != want[i] {
					t.Fatalf("%v (%#08x): got %#04x, want %#04x", x, math.Float32bits(x), got, want[i])
				}
			}
		})
	}
	// Widening back is exact: bf16 -> f32 -> bf16 and f16 -> f32 -> f16 are identities.
	for h := range 1 << 16 {
		b := uint16(h)
		if f := dtype.BF16ToF32(b); f == f && dtype.F32ToBF16(f) != b {
			t.Fatalf("bf16 %#04x does not round-trip", b)
		}
		if f := dtype.F16ToF32(b); f == f && dtype.F32ToF16(f) != b {
			t.Fatalf("f16 %#04x does not round-trip (%v)", b, f)
		}
	}
	if dtype.F32ToBF16(float32(math.NaN())) != 0x7FC0 {
		t.Error("NaN -> bf16 is not 0x7FC0 (torch's quiet NaN)")
	}
}

func TestE4M3AgainstReference(t *testing.T) {
	// Decode: all 256 codes, compared with ml_dtypes float8_e4m3fn -> float32.
	want, err := golden(t, "d.f8").Float32()
	if err != nil {
		t.Fatal(err)
	}
	for b := range 256 {
		got := dtype.E4M3ToF32(uint8(b))
		if math.Float32bits(got) != math.Float32bits(want[b]) && !(got != got && want[b] != want[b]) {
			t.Fatalf("code %#02x: got %v, want %v", b, got, want[b])
		}
	}
	// Spec §3.2 landmarks.
	for _, tc := range []struct {
		b    uint8
		want float32
	}{{0x7E, 448}, {0xFE, -448}, {0x01, 1.0 / 512}, {0x08, 1.0 / 64}, {0x38, 1}, {0x00, 0}} {
		if got := dtype.E4M3ToF32(tc.b); got != tc.want {
			t.Errorf("E4M3ToF32(%#02x) = %v, want %v", tc.b, got, tc.want)
		}
	}
	for _, b := range []uint8{0x7F, 0xFF} {
		if v := dtype.E4M3ToF32(b); v == v {
			t.Errorf("%#02x decodes to %v, want NaN", b, v)
		}
	}
	// Encode: ml_dtypes' RNE cast of values in range.
	src, _ := golden(t, "e4m3.src").Float32()
	enc := golden(t, "e4m3.enc").Data
	for i, x := range src {
		if got := dtype.F32ToE4M3(x); got != enc[i] {
			t.Fatalf("F32ToE4M3(%v) = %#02x, want %#02x", x, got, enc[i])
		}
	}
	if dtype.F32ToE4M3(500) != 0x7F || dtype.F32ToE4M3Sat(500) != 0x7E || dtype.F32ToE4M3Sat(-1e9) != 0xFE {
		t.Error("overflow handling")
	}
}

func TestSliceHelpers(t *testing.T) {
	src := []float32{1, -2.5, 3.14159, 1e-40}
	bf := make([]uint16, len(src))
	dtype.F32SliceToBF16(bf, src)
	back := make([]float32, len(src))
	dtype.BF16SliceToF32(back, bf)
	for i := range src {
		if back[i] != dtype.BF16ToF32(dtype.F32ToBF16(src[i])) {
			t.Fatalf("%d: %v", i, back[i])
		}
	}
	var buf [2]byte
	binary.LittleEndian.PutUint16(buf[:], bf[0])
	if buf[0] != 0x80 || buf[1] != 0x3F {
		t.Fatalf("bf16(1) = %x", buf)
	}
}

func BenchmarkF32ToBF16(b *testing.B) {
	src := make([]float32, 1<<16)
	for i := range src {
		src[i] = float32(i) * 0.37
	}
	dst := make([]uint16, len(src))
	b.SetBytes(int64(4 * len(src)))
	for b.Loop() {
		dtype.F32SliceToBF16(dst, src)
	}
}
