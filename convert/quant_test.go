package convert

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/dsgate/dsgate/core/dtype"
)

// TestPackInt4Layout pins the bit layout aclnnWeightQuantBatchMatmulV2's INT32 int4
// pack uses (ascend-cann.md §0.4): element 8i+j in bits 4j..4j+3, two's complement.
func TestPackInt4Layout(t *testing.T) {
	for _, tc := range []struct {
		q    []int8
		want uint32
	}{
		{[]int8{0, 1, 2, 3, 4, 5, 6, 7}, 0x76543210},
		{[]int8{-1, -8, 0, 0, 0, 0, 0, 7}, 0x700000_8F},
		{[]int8{-8, -8, -8, -8, -8, -8, -8, -8}, 0x88888888},
		{[]int8{-1, -1, -1, -1, -1, -1, -1, -1}, 0xFFFFFFFF},
	} {
		b := PackInt4(tc.q)
		if got := binary.LittleEndian.Uint32(b); got != tc.want {
			t.Errorf("PackInt4(%v) = %#08x, want %#08x", tc.q, got, tc.want)
		}
		if back := UnpackInt4(b); !slices.Equal(back, tc.q) {
			t.Errorf("UnpackInt4 = %v, want %v", back, tc.q)
		}
	}
}

func TestScaleFor(t *testing.T) {
	if ScaleFor(0, 7) != 0x3F80 {
		t.Error("zero amax does not give scale 1")
	}
	for _, amax := range []float32{1e-38, 1e-30, 0.001, 0.3, 1, 7, 127, 3e38} {
		for _, qmax := range []float32{7, 127} {
			s := dtype.BF16ToF32(ScaleFor(amax, qmax))
			// bf16 keeps 8 significant bits only for normal numbers (>= 2^-126).
			normal := amax/qmax >= 0x1p-126
			if s < amax/qmax || (normal && s > amax/qmax*(1+1.0/128)) || math.IsInf(float64(s), 0) {
				t.Errorf("ScaleFor(%v, %v) = %v", amax, qmax, s)
			}
		}
	}
}

// matrix returns a (n, k) test matrix of bf16-representable values.
func matrix(n, k int, seed uint64, heavy bool) []float32 {
	r := rng(seed | 1)
	w := make([]float32, n*k)
	for i := range w {
		v := r.heavy() * 0.02
		if heavy && r.next()%50 == 0 {
			// Cauchy-like tail: ratio of a normal to a small uniform.
			v /= float32(r.next()%1000+1) / 1000
		}
		w[i] = dtype.BF16ToF32(dtype.F32ToBF16(v))
	}
	for kk := range k { // one all-zero output channel
		w[1*k+kk] = 0
	}
	return w
}

// TestQuantRoundTrip: every element dequantizes within half its scale, the scale is
// within bf16 rounding of amax/qmax, and no value clips, on normal and heavy-tailed
// weights, per channel and per group (k not a multiple of the group).
func TestQuantRoundTrip(t *testing.T) {
	const n, k = 48, 200
	for _, heavy := range []bool{false, true} {
		for _, s := range []Scheme{{8, 0}, {4, 0}, {4, 32}, {4, 64}, {4, 128}} {
			t.Run(fmt.Sprintf("heavy=%v/int%d/g%d", heavy, s.Bits, s.Group), func(t *testing.T) {
				w := matrix(n, k, 99, heavy)
				var ch []uint16
				if s.Group == 0 {
					ch = channelScales(w, n, k, s.QMax())
				}
				q := quantize(w, k, 0, n, 0, k, s, ch)
				dq, err := Dequantize(q.weight, q.scale, s.Bits, k, n, s.Group)
				if err != nil {
					t.Fatal(err)
				}
				g := s.Group
				if g == 0 {
					g = k
				}
				var errSum, refSum float64
				for c := range n {
					for g0 := 0; g0 < k; g0 += g {
						g1 := min(g0+g, k)
						var amax float32
						for kk := g0; kk < g1; kk++ {
							amax = max(amax, float32(math.Abs(float64(w[c*k+kk]))))
						}
						si := c
						if s.Group > 0 {
							si = (g0/g)*n + c
						}
						sc := dtype.BF16ToF32(binary.LittleEndian.Uint16(q.scale[2*si:]))
						if amax == 0 && sc != 1 {
							t.Fatalf("zero group (%d, %d) has scale %v", c, g0, sc)
						}
						if amax > 0 && (sc < amax/s.QMax() || sc > amax/s.QMax()*(1+1.0/128)) {
							t.Fatalf("scale %v for amax %v", sc, amax)
						}
						for kk := g0; kk < g1; kk++ {
							d := math.Abs(float64(w[c*k+kk] - dq[c*k+kk]))
							if d > float64(sc)/2*(1+1e-6) {
								t.Fatalf("(%d, %d): |%v - %v| = %v > scale/2 = %v", c, kk, w[c*k+kk], dq[c*k+kk], d, sc/2)
							}
							errSum += d * d
							refSum += float64(w[c*k+kk]) * float64(w[c*k+kk])
						}
					}
				}
				t.Logf("relative RMS error %.4f", math.Sqrt(errSum/refSum))
			})
		}
	}
}

func TestDequantizeErrors(t *testing.T) {
	if _, err := Dequantize(make([]byte, 3), make([]byte, 4), 8, 2, 2, 0); err == nil {
		t.Error("short int8 weight accepted")
	}
	if _, err := Dequantize(make([]byte, 8), make([]byte, 4), 4, 2, 4, 0); err == nil {
		t.Error("int4 with n not a multiple of 8 accepted")
	}
	if _, err := Dequantize(make([]byte, 8), make([]byte, 2), 8, 2, 4, 0); err == nil {
		t.Error("short scale accepted")
	}
	if _, err := Dequantize(nil, nil, 3, 0, 0, 0); err == nil {
		t.Error("3 bits accepted")
	}
}

func TestRoundEven(t *testing.T) {
	for _, x := range []float32{0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.49998, -127.5, 7.5, -7.5, 0.49999997, 3.0000002, -8} {
		if got, want := roundEven(x), float32(math.RoundToEven(float64(x))); got != want {
			t.Errorf("roundEven(%v) = %v, want %v", x, got, want)
		}
	}
	r := rng(5)
	for range 100000 {
		x := float32(int64(r.next()%1000000)-500000) / 3000
		if got, want := roundEven(x), float32(math.RoundToEven(float64(x))); got != want {
			t.Fatalf("roundEven(%v) = %v, want %v", x, got, want)
		}
	}
}

// BenchmarkQuantize measures the quantizer alone on an expert-sized (1408, 2048) matrix.
func BenchmarkQuantize(b *testing.B) {
	const n, k = 1408, 2048
	w := matrix(n, k, 3, false)
	for _, s := range []Scheme{{8, 0}, {4, 0}, {4, 128}, {4, 32}} {
		b.Run(fmt.Sprintf("int%d-g%d", s.Bits, s.Group), func(b *testing.B) {
			b.SetBytes(2 * n * k) // bf16 input bytes
			for b.Loop() {
				var ch []uint16
				if s.Group == 0 {
					ch = channelScales(w, n, k, s.QMax())
				}
				quantize(w, k, 0, n, 0, k, s, ch)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(n*k), "ns/weight")
		})
	}
}
