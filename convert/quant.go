package convert

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/dsgate/dsgate/core/dtype"
)

// Scheme is a weight-only quantization format (FORMATS.md).
type Scheme struct {
	Bits  int // 8 or 4
	Group int // input rows per scale; 0 = one scale per output channel
}

// QMax is the largest quantized magnitude the scale maps amax onto: 127 or 7.
func (s Scheme) QMax() float32 {
	if s.Bits == 4 {
		return 7
	}
	return 127
}

// ScaleFor returns the bf16 scale for a group whose largest magnitude is amax: the
// smallest bf16 >= amax/qmax (so nothing clips), or 1 when amax is 0.
func ScaleFor(amax, qmax float32) uint16 {
	if amax == 0 {
		return 0x3F80 // 1.0
	}
	s := amax / qmax
	b := dtype.F32ToBF16(s)
	if dtype.BF16ToF32(b) < s {
		b++ // positive: the next bf16 up
	}
	return b
}

// quantOut is one rank's quantized weight and scale bytes.
type quantOut struct {
	weight []byte // I8 (k, n) or I32 (k, n/8), little-endian
	scale  []byte // BF16 (n,) or (ceil(k/G), n)
}

// parallel runs fn over [0, n) split into contiguous chunks of at least minChunk on up
// to GOMAXPROCS goroutines.
func parallel(n, minChunk int, fn func(lo, hi int)) {
	w := min(runtime.GOMAXPROCS(0), (n+minChunk-1)/minChunk)
	if w <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + w - 1) / w
	for lo := 0; lo < n; lo += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, min(lo+chunk, n))
	}
	wg.Wait()
}

// channelScales computes per-output-channel scales of W (n, k) over the whole k.
func channelScales(w []float32, n, k int, qmax float32) []uint16 {
	sc := make([]uint16, n)
	parallel(n, 64, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			var amax float32
			for _, v := range w[c*k : (c+1)*k] {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			sc[c] = ScaleFor(amax, qmax)
		}
	})
	return sc
}

// roundEven rounds x (|x| < 2^22) to the nearest integer, ties to even, in float32:
// adding and subtracting 1.5*2^23 leaves exactly the rounded value (Go evaluates the
// two operations in order, in float32).
func roundEven(x float32) float32 {
	const magic = 0x1.8p23
	return (x + magic) - magic
}

// quantize quantizes the block W[r0:r1, c0:c1] of W (n, k) (rows = output channels,
// columns = input dim) into the transposed stored layout (k_r, n_r). chScale, when
// non-nil, holds per-channel scales for all n rows (computed over the full k);
// otherwise scales are computed per group of the block's own columns.
func quantize(w []float32, k, r0, r1, c0, c1 int, s Scheme, chScale []uint16) quantOut {
	nr, kr := r1-r0, c1-c0
	qmax := s.QMax()
	lo := -qmax - 1
	q := make([]byte, kr*nr)
	var scales []uint16
	ng, group := 1, kr
	if chScale != nil {
		scales = chScale[r0:r1]
	} else {
		group = s.Group
		ng = (kr + group - 1) / group
		scales = make([]uint16, ng*nr)
	}
	// Output channels go in blocks of 64, so that each stored row kk gets a contiguous
	// 64-byte run per block (the transpose stays in cache).
	const blk = 64
	nb := (nr + blk - 1) / blk
	parallel(nb, 1, func(a, b int) {
		sf := make([]float32, blk*ng)
		tile := make([]byte, blk*blk)
		for bi := a; bi < b; bi++ {
			cb, ce := bi*blk, min((bi+1)*blk, nr)
			for c := cb; c < ce; c++ {
				row := w[(r0+c)*k+c0 : (r0+c)*k+c1]
				if chScale != nil {
					sf[(c-cb)*ng] = dtype.BF16ToF32(scales[c])
					continue
				}
				for g := range ng {
					var amax float32
					for _, v := range row[g*group : min((g+1)*group, kr)] {
						amax = max(amax, float32(math.Abs(float64(v))))
					}
					bs := ScaleFor(amax, qmax)
					scales[g*nr+c] = bs
					sf[(c-cb)*ng+g] = dtype.BF16ToF32(bs)
				}
			}
			// Quantize a 64x64 tile at a time: rows of W are read contiguously, the
			// transposed tile is written to the output row by row.
			for kk0 := 0; kk0 < kr; kk0 += blk {
				kk1 := min(kk0+blk, kr)
				for c := cb; c < ce; c++ {
					row := w[(r0+c)*k+c0 : (r0+c)*k+c1]
					sfc := sf[(c-cb)*ng : (c-cb+1)*ng]
					for a := kk0; a < kk1; {
						g := a / group
						e := min(kk1, (g+1)*group)
						inv := sfc[g]
						for kk := a; kk < e; kk++ {
							x := roundEven(row[kk] / inv)
							if x > qmax {
								x = qmax
							} else if x < lo {
								x = lo
							}
							tile[(kk-kk0)*blk+(c-cb)] = byte(int8(x))
						}
						a = e
					}
				}
				for kk := kk0; kk < kk1; kk++ {
					copy(q[kk*nr+cb:kk*nr+ce], tile[(kk-kk0)*blk:(kk-kk0)*blk+ce-cb])
				}
			}
		}
	})
	out := quantOut{scale: make([]byte, 2*len(scales))}
	for i, v := range scales {
		binary.LittleEndian.PutUint16(out.scale[2*i:], v)
	}
	if s.Bits == 8 {
		out.weight = q
		return out
	}
	out.weight = packInt4Bytes(q)
	return out
}

// packInt4Bytes is PackInt4 on int8 values held as bytes.
func packInt4Bytes(q []byte) []byte {
	out := make([]byte, len(q)/2)
	for i := range out {
		out[i] = q[2*i]&0x0F | q[2*i+1]<<4
	}
	return out
}

// PackInt4 packs int4 values (each in [-8, 7]) eight per little-endian int32: element
// 8i+j in bits 4j..4j+3 of word i (two's complement, low nibble first). len(q) must be a
// multiple of 8; the rows of a (k, n) matrix pack independently when n is.
func PackInt4(q []int8) []byte {
	out := make([]byte, len(q)/2)
	for i := range out {
		out[i] = byte(q[2*i])&0x0F | byte(q[2*i+1])<<4
	}
	return out
}

// UnpackInt4 is the inverse of PackInt4.
func UnpackInt4(b []byte) []int8 {
	out := make([]int8, 2*len(b))
	for i, x := range b {
		out[2*i] = int8(x<<4) >> 4
		out[2*i+1] = int8(x) >> 4
	}
	return out
}

// Dequantize expands a stored quantized weight back to W (n, k) in the reference
// orientation: weight is I8 (k, n) or packed I32 (k, n/8) bytes, scale BF16 bytes of
// shape (n,) (group 0) or (ceil(k/group), n).
func Dequantize(weight, scale []byte, bits, k, n, group int) ([]float32, error) {
	var q []int8
	switch bits {
	case 8:
		if len(weight) != k*n {
			return nil, fmt.Errorf("int8 weight: %d bytes for (%d, %d)", len(weight), k, n)
		}
		q = make([]int8, len(weight))
		for i, b := range weight {
			q[i] = int8(b)
		}
	case 4:
		if n%8 != 0 || len(weight) != k*n/2 {
			return nil, fmt.Errorf("int4 weight: %d bytes for (%d, %d/8) int32", len(weight), k, n)
		}
		q = UnpackInt4(weight)
	default:
		return nil, fmt.Errorf("bits must be 8 or 4, got %d", bits)
	}
	ng := 1
	if group > 0 {
		ng = (k + group - 1) / group
	}
	if len(scale) != 2*ng*n {
		return nil, fmt.Errorf("scale: %d bytes, want (%d, %d) bf16", len(scale), ng, n)
	}
	w := make([]float32, n*k)
	for kk := range k {
		g := 0
		if group > 0 {
			g = kk / group
		}
		for c := range n {
			s := dtype.BF16ToF32(binary.LittleEndian.Uint16(scale[2*(g*n+c):]))
			w[c*k+kk] = float32(q[kk*n+c]) * s
		}
	}
	return w, nil
}

// DequantFP8 dequantizes an fp8 e4m3fn weight (rows, cols) with its 128x128 block
// scale_inv (ceil(rows/128), ceil(cols/128)) exactly as DeepSeek's weight_dequant +
// bf16 store: bf16(f32(fp8) * f32 scale), round to nearest even. dst receives the bf16
// bits, row-major.
func DequantFP8(dst []uint16, w8 []byte, rows, cols int, scale []float32) error {
	sr, sc := (rows+127)/128, (cols+127)/128
	if len(w8) != rows*cols || len(dst) < rows*cols {
		return fmt.Errorf("fp8 weight: %d bytes for (%d, %d)", len(w8), rows, cols)
	}
	if len(scale) != sr*sc {
		return fmt.Errorf("weight_scale_inv has %d values, want (%d, %d) for weight (%d, %d)", len(scale), sr, sc, rows, cols)
	}
	tab := dtype.E4M3Table()
	parallel(rows, 64, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			srow := scale[(r/128)*sc : (r/128+1)*sc]
			in := w8[r*cols : (r+1)*cols]
			out := dst[r*cols : (r+1)*cols]
			for c, b := range in {
				out[c] = dtype.F32ToBF16(tab[b] * srow[c>>7])
			}
		}
	})
	return nil
}

// dequantFP8Into is DequantFP8 writing either little-endian bf16 bytes (b, 2 per
// element) or the bf16 values widened to float32 (f). Shapes must be checked already.
func dequantFP8Into(b []byte, f []float32, w8 []byte, rows, cols int, scale []float32) {
	sc := (cols + 127) / 128
	tab := dtype.E4M3Table()
	parallel(rows, 16, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			srow := scale[(r/128)*sc : (r/128+1)*sc]
			in := w8[r*cols : (r+1)*cols]
			for c0 := 0; c0 < cols; c0 += 128 {
				s := srow[c0>>7]
				blk := in[c0:min(c0+128, cols)]
				if b != nil {
					out := b[2*(r*cols+c0):]
					for i, x := range blk {
						h := dtype.F32ToBF16(tab[x] * s)
						out[2*i] = byte(h)
						out[2*i+1] = byte(h >> 8)
					}
				} else {
					out := f[r*cols+c0:]
					for i, x := range blk {
						out[i] = dtype.BF16ToF32(dtype.F32ToBF16(tab[x] * s))
					}
				}
			}
		}
	})
}

// bf16ToF32Checked widens little-endian bf16 bytes into dst and reports the index of
// the first Inf or NaN (-1 if none).
func bf16ToF32Checked(dst []float32, src []byte) int {
	var bad atomic.Int64
	bad.Store(-1)
	n := len(src) / 2
	parallel(n, 1<<16, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			u := uint32(src[2*i]) | uint32(src[2*i+1])<<8
			if u&0x7F80 == 0x7F80 {
				bad.CompareAndSwap(-1, int64(i))
			}
			dst[i] = math.Float32frombits(u << 16)
		}
	})
	return int(bad.Load())
}
