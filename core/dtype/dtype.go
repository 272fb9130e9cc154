// Package dtype converts between float32 and the narrow float formats found in
// DeepSeek checkpoints: bfloat16, IEEE float16 and float8 e4m3fn. Every conversion
// matches PyTorch bit for bit: float32->bfloat16 rounds to nearest even (NaN becomes
// the quiet NaN 0x7FC0), and the widening conversions are exact.
//
// This is the shared home of these helpers: core/safetensors, convert and the model
// loader all use it.
package dtype

import "math"

// BF16ToF32 widens a bfloat16 bit pattern to float32 (exact).
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds a float32 to bfloat16 with round-to-nearest-even, as torch's
// c10::BFloat16 does: NaN -> 0x7FC0, infinities and overflow -> +-Inf.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f {
		return 0x7FC0
	}
	bias := uint32(0x7FFF) + (u>>16)&1
	return uint16((u + bias) >> 16)
}

// F16ToF32 widens an IEEE 754 binary16 bit pattern to float32 (exact, subnormals,
// infinities and NaN payloads preserved).
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1F
	man := uint32(h) & 0x3FF
	switch {
	case exp == 0x1F:
		return math.Float32frombits(sign | 0x7F800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: value = man * 2^-24.
	v := float32(man) * (1.0 / 16777216.0)
	if sign != 0 {
		v = -v
	}
	return v
}

// F32ToF16 rounds a float32 to IEEE binary16 with round-to-nearest-even (overflow
// to +-Inf, NaN kept as a quiet NaN), as torch's c10::Half does.
func F32ToF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	exp := int32(u>>23) & 0xFF
	man := u & 0x7FFFFF
	if exp == 0xFF {
		if man != 0 {
			return sign | 0x7E00 | uint16(man>>13)
		}
		return sign | 0x7C00
	}
	e := exp - 127 + 15
	if e >= 0x1F {
		return sign | 0x7C00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rest := man & ((1 << shift) - 1)
		r := man >> shift
		if rest > half || (rest == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rest := man & 0x1FFF
	if rest > 0x1000 || (rest == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is the correct result (up to Inf)
	}
	return sign | uint16(r)
}

// e4m3Table holds the float32 value of every float8 e4m3fn byte.
var e4m3Table = func() (t [256]float32) {
	for i := range t {
		t[i] = e4m3Decode(uint8(i))
	}
	return t
}()

func e4m3Decode(b uint8) float32 {
	s := b >> 7
	e := int(b>>3) & 15
	m := float64(b & 7)
	var v float64
	switch {
	case e == 15 && m == 7:
		return float32(math.NaN())
	case e == 0:
		v = m / 8 * math.Ldexp(1, -6)
	default:
		v = (1 + m/8) * math.Ldexp(1, e-7)
	}
	if s != 0 {
		v = -v
	}
	return float32(v)
}

// E4M3ToF32 decodes a float8 e4m3fn byte (torch.float8_e4m3fn: no infinities, 0x7F and
// 0xFF are NaN, max finite 448) to float32 exactly.
func E4M3ToF32(b uint8) float32 { return e4m3Table[b] }

// E4M3Table returns the float32 value of all 256 e4m3fn codes.
func E4M3Table() [256]float32 { return e4m3Table }

// F32ToE4M3 rounds a float32 to float8 e4m3fn with round-to-nearest-even. Values whose
// magnitude rounds above 448 and NaN become NaN (0x7F/0xFF), as torch's non-saturating
// cast does; use [F32ToE4M3Sat] to clamp instead.
func F32ToE4M3(f float32) uint8 {
	return f32ToE4M3(f, false)
}

// F32ToE4M3Sat is [F32ToE4M3] with saturation: finite values beyond +-448 become +-448.
func F32ToE4M3Sat(f float32) uint8 { return f32ToE4M3(f, true) }

func f32ToE4M3(f float32, sat bool) uint8 {
	u := math.Float32bits(f)
	sign := uint8(u>>24) & 0x80
	if f != f {
		return sign | 0x7F
	}
	a := math.Abs(float64(f))
	if math.IsInf(a, 0) {
		if sat {
			return sign | 0x7E
		}
		return sign | 0x7F
	}
	// Exact search over the 127 non-negative finite codes (monotone in the code).
	lo, hi := 0, 126
	if a >= float64(e4m3Table[126]) {
		// 448 and above: 464 is the midpoint to the next (absent, odd) code 480 and
		// rounds to even, i.e. to 448.
		if a > 464 && !sat {
			return sign | 0x7F
		}
		return sign | 0x7E
	}
	for lo+1 < hi {
		mid := (lo + hi) / 2
		if float64(e4m3Table[mid]) <= a {
			lo = mid
		} else {
			hi = mid
		}
	}
	vlo, vhi := float64(e4m3Table[lo]), float64(e4m3Table[hi])
	switch {
	case a-vlo < vhi-a:
		return sign | uint8(lo)
	case a-vlo > vhi-a:
		return sign | uint8(hi)
	case lo&1 == 0:
		return sign | uint8(lo)
	}
	return sign | uint8(hi)
}

// BF16SliceToF32 widens src into dst (len(dst) must be >= len(src)).
func BF16SliceToF32(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, b := range src {
		dst[i] = math.Float32frombits(uint32(b) << 16)
	}
}

// F32SliceToBF16 rounds src into dst with [F32ToBF16] (len(dst) must be >= len(src)).
func F32SliceToBF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, f := range src {
		dst[i] = F32ToBF16(f)
	}
}

// E8M0ToF32 decodes an unsigned power-of-two scale byte (OCP MX e8m0, torch
// float8_e8m0fnu): 2^(b-127), 0xFF is NaN. 2^-127 is a float32 subnormal, still exact.
func E8M0ToF32(b uint8) float32 {
	if b == 0xFF {
		return float32(math.NaN())
	}
	return float32(math.Ldexp(1, int(b)-127))
}
