package backend

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DType is the storage type of a weight.
type DType uint8

// Weight storage types.
const (
	F32  DType = iota + 1 // float32, [N, K] row-major
	BF16                  // bfloat16 bit patterns, [N, K] row-major
	I8                    // int8, stored transposed [K, N] (convert/FORMATS.md)
	I4                    // int4, transposed [K, N/8] int32 words, 8 values per word along N, low nibble first
)

// String returns the safetensors-style name of the dtype.
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case I8:
		return "I8"
	case I4:
		return "I4"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// HostWeight is a weight in host memory, as read from a checkpoint: logical shape N × K
// (PyTorch [out, in]; y = x · Wᵀ). Exactly one of the data slices is used:
//
//   - F32: F32 holds N·K values, row-major [N][K].
//   - BF16: BF16 holds N·K bfloat16 bit patterns, row-major [N][K].
//   - I8: Q holds K·N int8 values, row-major [K][N] (transposed, as on disk).
//   - I4: Q holds K·N/2 bytes: [K][N/8] little-endian int32 words; value n of row k is
//     nibble n%8 (bits 4·(n%8)…) of word n/8, two's complement (−8…7). N % 8 == 0.
//
// Quantized weights have symmetric scales (value = q · scale) in Scale: per output
// channel (GroupSize == 0, len N) or per group of GroupSize consecutive k
// (len ⌈K/GroupSize⌉·N, row-major [K/GroupSize][N]). Scales read from a checkpoint are
// bfloat16 values widened exactly.
type HostWeight struct {
	Name      string
	DType     DType
	N, K      int
	F32       []float32
	BF16      []uint16
	Q         []byte
	Scale     []float32
	GroupSize int
}

// Validate checks that the slices match the shape and dtype.
func (w *HostWeight) Validate() error {
	if w == nil {
		return fmt.Errorf("backend: nil weight")
	}
	if w.N <= 0 || w.K <= 0 {
		return fmt.Errorf("weight %s: bad shape %d×%d", w.Name, w.N, w.K)
	}
	nk := w.N * w.K
	switch w.DType {
	case F32:
		if len(w.F32) != nk {
			return fmt.Errorf("weight %s: F32 data has %d values, want %d×%d", w.Name, len(w.F32), w.N, w.K)
		}
		return nil
	case BF16:
		if len(w.BF16) != nk {
			return fmt.Errorf("weight %s: BF16 data has %d values, want %d×%d", w.Name, len(w.BF16), w.N, w.K)
		}
		return nil
	case I8:
		if len(w.Q) != nk {
			return fmt.Errorf("weight %s: I8 data has %d bytes, want %d×%d", w.Name, len(w.Q), w.K, w.N)
		}
	case I4:
		if w.N%8 != 0 {
			return fmt.Errorf("weight %s: I4 needs N %% 8 == 0, got N=%d", w.Name, w.N)
		}
		if len(w.Q) != nk/2 {
			return fmt.Errorf("weight %s: I4 data has %d bytes, want %d", w.Name, len(w.Q), nk/2)
		}
	default:
		return fmt.Errorf("weight %s: unsupported dtype %v", w.Name, w.DType)
	}
	if w.GroupSize < 0 {
		return fmt.Errorf("weight %s: negative group size %d", w.Name, w.GroupSize)
	}
	if want := w.scaleRows() * w.N; len(w.Scale) != want {
		return fmt.Errorf("weight %s: scale has %d values, want %d (group size %d)", w.Name, len(w.Scale), want, w.GroupSize)
	}
	return nil
}

func (w *HostWeight) scaleRows() int {
	if w.GroupSize == 0 {
		return 1
	}
	return (w.K + w.GroupSize - 1) / w.GroupSize
}

// Quantized reports whether the weight is I8 or I4.
func (w *HostWeight) Quantized() bool { return w.DType == I8 || w.DType == I4 }

// q returns the quantized value at logical (n, k).
func (w *HostWeight) q(n, k int) int8 {
	if w.DType == I8 {
		return int8(w.Q[k*w.N+n])
	}
	word := binary.LittleEndian.Uint32(w.Q[(k*(w.N/8)+n/8)*4:])
	v := (word >> (4 * uint(n%8))) & 0xF
	return int8(v<<4) >> 4
}

// scale returns the scale of logical (n, k).
func (w *HostWeight) scale(n, k int) float32 {
	if w.GroupSize == 0 {
		return w.Scale[n]
	}
	return w.Scale[(k/w.GroupSize)*w.N+n]
}

// At returns the float32 value of logical element (n, k): exact for F32 and BF16, and
// q·scale (one float32 multiply) for quantized weights.
func (w *HostWeight) At(n, k int) float32 {
	switch w.DType {
	case F32:
		return w.F32[n*w.K+k]
	case BF16:
		return bf16(w.BF16[n*w.K+k])
	default:
		return float32(w.q(n, k)) * w.scale(n, k)
	}
}

// Dequantize returns the weight as N·K float32 values, row-major [N][K] (At for every
// element). The weight must be valid.
func (w *HostWeight) Dequantize() []float32 {
	out := make([]float32, w.N*w.K)
	for n := 0; n < w.N; n++ {
		for k := 0; k < w.K; k++ {
			out[n*w.K+k] = w.At(n, k)
		}
	}
	return out
}

// SelectRows returns a new weight made of the given logical rows (output channels), in
// order, in the same dtype (quantized values and scales are copied exactly).
func (w *HostWeight) SelectRows(name string, rows []int) (*HostWeight, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r < 0 || r >= w.N {
			return nil, fmt.Errorf("weight %s: row %d out of range [0,%d)", w.Name, r, w.N)
		}
	}
	out := &HostWeight{Name: name, DType: w.DType, N: len(rows), K: w.K, GroupSize: w.GroupSize}
	switch w.DType {
	case F32:
		out.F32 = make([]float32, 0, len(rows)*w.K)
		for _, r := range rows {
			out.F32 = append(out.F32, w.F32[r*w.K:(r+1)*w.K]...)
		}
		return out, nil
	case BF16:
		out.BF16 = make([]uint16, 0, len(rows)*w.K)
		for _, r := range rows {
			out.BF16 = append(out.BF16, w.BF16[r*w.K:(r+1)*w.K]...)
		}
		return out, nil
	}
	if w.DType == I4 && len(rows)%8 != 0 {
		return nil, fmt.Errorf("weight %s: I4 row selection needs a multiple of 8 rows, got %d", w.Name, len(rows))
	}
	sr := w.scaleRows()
	out.Scale = make([]float32, sr*len(rows))
	for g := 0; g < sr; g++ {
		for j, r := range rows {
			out.Scale[g*len(rows)+j] = w.Scale[g*w.N+r]
		}
	}
	vals := make([]int8, w.K*len(rows))
	for k := 0; k < w.K; k++ {
		for j, r := range rows {
			vals[k*len(rows)+j] = w.q(r, k)
		}
	}
	out.Q = PackQuant(w.DType, vals, w.K, len(rows))
	return out, nil
}

// ConcatRows stacks weights along N (output channels): the result's rows are a's rows
// then b's rows, and so on. All parts must share dtype, K and group size.
func ConcatRows(name string, parts ...*HostWeight) (*HostWeight, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("backend: ConcatRows %s: no parts", name)
	}
	p0 := parts[0]
	n := 0
	for _, p := range parts {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		if p.DType != p0.DType || p.K != p0.K || p.GroupSize != p0.GroupSize {
			return nil, fmt.Errorf("backend: ConcatRows %s: %s (%v, K=%d, g=%d) does not match %s (%v, K=%d, g=%d)",
				name, p.Name, p.DType, p.K, p.GroupSize, p0.Name, p0.DType, p0.K, p0.GroupSize)
		}
		n += p.N
	}
	out := &HostWeight{Name: name, DType: p0.DType, N: n, K: p0.K, GroupSize: p0.GroupSize}
	switch p0.DType {
	case F32:
		for _, p := range parts {
			out.F32 = append(out.F32, p.F32...)
		}
		return out, nil
	case BF16:
		for _, p := range parts {
			out.BF16 = append(out.BF16, p.BF16...)
		}
		return out, nil
	}
	sr := p0.scaleRows()
	out.Scale = make([]float32, 0, sr*n)
	for g := 0; g < sr; g++ {
		for _, p := range parts {
			out.Scale = append(out.Scale, p.Scale[g*p.N:(g+1)*p.N]...)
		}
	}
	vals := make([]int8, 0, p0.K*n)
	for k := 0; k < p0.K; k++ {
		for _, p := range parts {
			for j := 0; j < p.N; j++ {
				vals = append(vals, p.q(j, k))
			}
		}
	}
	out.Q = PackQuant(p0.DType, vals, p0.K, n)
	return out, nil
}

// PackQuant packs quantized values given row-major as [K][N] into the Q layout of dtype
// (I8: one byte each; I4: eight per little-endian int32 along N, low nibble first; values
// must be in [−8, 7] and N % 8 == 0).
func PackQuant(d DType, vals []int8, k, n int) []byte {
	if d == I8 {
		out := make([]byte, len(vals))
		for i, v := range vals {
			out[i] = byte(v)
		}
		return out
	}
	out := make([]byte, k*n/2)
	for r := 0; r < k; r++ {
		for c := 0; c < n/8; c++ {
			var word uint32
			for j := 0; j < 8; j++ {
				word |= uint32(uint8(vals[r*n+c*8+j])&0xF) << (4 * uint(j))
			}
			binary.LittleEndian.PutUint32(out[(r*(n/8)+c)*4:], word)
		}
	}
	return out
}

// Transposed returns the F32 weight Wᵀ (K × N) of w, dequantizing if needed.
func (w *HostWeight) Transposed(name string) (*HostWeight, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	out := &HostWeight{Name: name, DType: F32, N: w.K, K: w.N, F32: make([]float32, w.N*w.K)}
	for n := 0; n < w.N; n++ {
		for k := 0; k < w.K; k++ {
			out.F32[k*w.N+n] = w.At(n, k)
		}
	}
	return out, nil
}

// ToBF16 returns an F32 weight rounded to bfloat16 (round to nearest even); other
// dtypes are returned unchanged.
func (w *HostWeight) ToBF16() *HostWeight {
	if w.DType != F32 {
		return w
	}
	out := &HostWeight{Name: w.Name, DType: BF16, N: w.N, K: w.K, BF16: make([]uint16, len(w.F32))}
	for i, v := range w.F32 {
		out.BF16[i] = ToBF16(v)
	}
	return out
}

// Vector returns a 1-D F32 weight (N = len(v), K = 1), used for norm weights and the
// router bias.
func Vector(name string, v []float32) *HostWeight {
	return &HostWeight{Name: name, DType: F32, N: len(v), K: 1, F32: v}
}

func bf16(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// ToBF16 rounds a float32 to bfloat16 bits (round to nearest even; NaN -> 0x7FC0).
func ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f {
		return 0x7FC0
	}
	return uint16((u + 0x7FFF + (u>>16)&1) >> 16)
}
