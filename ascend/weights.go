//go:build cgo

package ascend

/*
#include "cann.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// Weight is a parameter in device memory, laid out for the operator that consumes it:
//
//   - vectors (K == 1: norm weights, router bias): float32 (N,);
//   - dense F32/BF16 matrices: (N+1) × K in the backend's matrix dtype (bfloat16, or
//     float32 in f32 precision); row N is zero so that Embedding can map ids outside
//     this rank's vocabulary shard to it;
//   - I8: the (K, N) int8 matrix of convert/FORMATS.md, unchanged; I4: the (K, N/8) int32
//     words (8 nibbles, low first), unchanged — exactly what aclnnWeightQuantBatchMatmulV2
//     takes as INT8 / INT32 weights — with bfloat16 scales (N,) or (⌈K/g⌉, N).
//     In f32 precision quantized weights are dequantized to a dense float32 matrix.
type Weight struct {
	name  string
	dt    backend.DType
	n, k  int
	data  *devBuf
	dataT int // aclDataType of data
	dense bool
	vec1  bool // K == 1 (norm weight, router bias): float32 (N+1) × 1, host copy in hostV
	scale *devBuf
	group int
	hostV []float32 // vectors only: host copy (router bias for the host gate fallback)
	headT *devBuf   // quantized weights used by HeadLinear: dense Wᵀ (K, N) in bf16, made on first use
}

// Name returns the weight's name.
func (w *Weight) Name() string { return w.name }

// DType returns the checkpoint dtype.
func (w *Weight) DType() backend.DType { return w.dt }

// N returns the output channels.
func (w *Weight) N() int { return w.n }

// K returns the input channels.
func (w *Weight) K() int { return w.k }

func asWeight(op string, w backend.Weight) (*Weight, error) {
	d, ok := w.(*Weight)
	if !ok || d == nil {
		return nil, fmt.Errorf("%s: weight %T is not an ascend weight", op, w)
	}
	return d, nil
}

// LoadWeight validates hw and uploads it in the layout its operators take.
func (b *Backend) LoadWeight(hw *backend.HostWeight) (backend.Weight, error) {
	if err := hw.Validate(); err != nil {
		return nil, err
	}
	w := &Weight{name: hw.Name, dt: hw.DType, n: hw.N, k: hw.K}
	if hw.Quantized() && hw.GroupSize != 0 && hw.GroupSize < hw.K && hw.GroupSize%32 != 0 && b.matDT == dtBF16 {
		return nil, fmt.Errorf("ascend: weight %s: group size %d is not a multiple of 32 (aclnnWeightQuantBatchMatmulV2)", hw.Name, hw.GroupSize)
	}
	err := b.do(func() error {
		if err := w.load(b, hw); err != nil {
			return err
		}
		// Wait for the copies so that the pinned staging buffers are released now, not
		// after the whole checkpoint has been staged in host memory.
		return b.w.sync()
	})
	if err != nil {
		return nil, fmt.Errorf("ascend: load %s: %w", hw.Name, err)
	}
	return w, nil
}

// load uploads hw (on the rank's thread).
func (w *Weight) load(b *Backend, hw *backend.HostWeight) error {
	{
		switch {
		case hw.K == 1 && !hw.Quantized():
			// 1-D parameter (norm weight, router bias), also usable as an N × 1 matrix:
			// float32 (N+1) with the zero row last.
			v := make([]float32, hw.N+1)
			for i := 0; i < hw.N; i++ {
				v[i] = hw.At(i, 0)
			}
			w.hostV, w.vec1 = v[:hw.N], true
			return w.upload(b, unsafe.Pointer(&v[0]), 4*len(v), dtF32, true)
		case !hw.Quantized() || b.matDT == dtF32:
			rows := hw.N + 1
			if b.matDT == dtF32 {
				f := make([]float32, rows*hw.K)
				if hw.DType == backend.F32 {
					copy(f, hw.F32)
				} else {
					for n := 0; n < hw.N; n++ {
						for k := 0; k < hw.K; k++ {
							f[n*hw.K+k] = hw.At(n, k)
						}
					}
				}
				return w.upload(b, unsafe.Pointer(&f[0]), 4*len(f), dtF32, true)
			}
			h := make([]uint16, rows*hw.K)
			if hw.DType == backend.BF16 {
				copy(h, hw.BF16)
			} else {
				for i, v := range hw.F32 {
					h[i] = backend.ToBF16(v)
				}
			}
			return w.upload(b, unsafe.Pointer(&h[0]), 2*len(h), dtBF16, true)
		default:
			dt := dtI8
			if hw.DType == backend.I4 {
				dt = dtI32
			}
			if err := w.upload(b, unsafe.Pointer(&hw.Q[0]), len(hw.Q), dt, false); err != nil {
				return err
			}
			s := make([]uint16, len(hw.Scale))
			for i, v := range hw.Scale {
				s[i] = backend.ToBF16(v)
			}
			buf, err := b.w.newBuf(2 * len(s))
			if err != nil {
				return err
			}
			w.scale = buf
			if hw.GroupSize > 0 && hw.GroupSize < hw.K {
				w.group = hw.GroupSize
			}
			return b.w.upload(buf.ptr, unsafe.Pointer(&s[0]), 2*len(s))
		}
	}
}

func (w *Weight) upload(b *Backend, p unsafe.Pointer, n, dt int, dense bool) error {
	buf, err := b.w.newBuf(n)
	if err != nil {
		return err
	}
	w.data, w.dataT, w.dense = buf, dt, dense
	return b.w.upload(buf.ptr, p, n)
}

// vec is the (N,) float32 view of a vector weight.
func (w *Weight) vec() view {
	return view{w.data.ptr, int64(w.n), dtF32, []int64{int64(w.n)}, []int64{1}, 0}
}

// denseT is the (K, N) transposed view of a dense (N+1) × K matrix, columns [n0, n0+nc).
func (w *Weight) denseT(n0, nc int) view {
	return view{w.data.ptr, int64((w.n + 1) * w.k), w.dataT, []int64{int64(w.k), int64(nc)}, []int64{1, int64(w.k)}, int64(n0 * w.k)}
}

// ---------------------------------------------------------------- cache and rope

// Cache is the paged latent cache in device memory: [layer][slot][width] in the
// backend's matrix dtype.
type Cache struct {
	buf                   *devBuf
	dt                    int
	layers, nb, bs, width int
}

// Layers returns the number of layers.
func (c *Cache) Layers() int { return c.layers }

// NumBlocks returns the blocks per layer.
func (c *Cache) NumBlocks() int { return c.nb }

// BlockSize returns the token rows per block.
func (c *Cache) BlockSize() int { return c.bs }

// Width returns the values per row.
func (c *Cache) Width() int { return c.width }

// layer is the (slots, width) view of one layer.
func (c *Cache) layer(l int) view {
	slots := c.nb * c.bs
	return view{c.buf.ptr, int64(c.layers * slots * c.width), c.dt, []int64{int64(slots), int64(c.width)}, []int64{int64(c.width), 1},
		int64(l * slots * c.width)}
}

// NewCache allocates a zeroed paged cache.
func (b *Backend) NewCache(layers, numBlocks, blockSize, width int) (backend.Cache, error) {
	if layers <= 0 || numBlocks <= 0 || blockSize <= 0 || width <= 0 {
		return nil, fmt.Errorf("ascend: bad cache shape layers=%d blocks=%d block_size=%d width=%d", layers, numBlocks, blockSize, width)
	}
	c := &Cache{dt: b.matDT, layers: layers, nb: numBlocks, bs: blockSize, width: width}
	err := b.do(func() error {
		buf, err := b.w.newBuf(layers * numBlocks * blockSize * width * dtSize(c.dt))
		if err != nil {
			return err
		}
		c.buf = buf
		return b.w.memset0(buf.ptr, buf.bytes)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Rope is a rotary table in device memory: cos and sin as (maxPos, 2·pairs) float32,
// each angle repeated for both elements of its pair (aclnnRotaryPositionEmbedding mode 1).
type Rope struct {
	cos, sin *devBuf
	pairs    int
	maxPos   int
}

// Pairs returns the rotated pairs per head.
func (r *Rope) Pairs() int { return r.pairs }

// MaxPos returns the number of positions.
func (r *Rope) MaxPos() int { return r.maxPos }

// NewRopeTable builds the cos/sin tables (computed on the host exactly as the reference
// does, then uploaded).
func (b *Backend) NewRopeTable(freqs []float32, maxPos int) (backend.RopeTable, error) {
	h, err := backend.NewHostRope(freqs, maxPos)
	if err != nil {
		return nil, err
	}
	p := len(freqs)
	c2, s2 := make([]float32, 2*p*maxPos), make([]float32, 2*p*maxPos)
	for t := 0; t < maxPos; t++ {
		for i := 0; i < p; i++ {
			c2[t*2*p+2*i], c2[t*2*p+2*i+1] = h.Cos[t*p+i], h.Cos[t*p+i]
			s2[t*2*p+2*i], s2[t*2*p+2*i+1] = h.Sin[t*p+i], h.Sin[t*p+i]
		}
	}
	r := &Rope{pairs: p, maxPos: maxPos}
	err = b.do(func() error {
		for _, x := range []struct {
			dst **devBuf
			src []float32
		}{{&r.cos, c2}, {&r.sin, s2}} {
			buf, err := b.w.newBuf(4 * len(x.src))
			if err != nil {
				return err
			}
			*x.dst = buf
			if err := b.w.upload(buf.ptr, unsafe.Pointer(&x.src[0]), 4*len(x.src)); err != nil {
				return err
			}
		}
		return b.w.sync()
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

var _ = C.int(0)
