package backend

import (
	"fmt"
	"math"
)

// HostTensor is a Tensor in host memory: element (i, j) is Data[Off + i·Stride + j].
// Reference and the CPU backend use it; views share Data.
type HostTensor struct {
	Data   []float32
	Off    int
	R, C   int
	Stride int
}

// Rows returns the number of rows.
func (t *HostTensor) Rows() int { return t.R }

// Cols returns the number of columns.
func (t *HostTensor) Cols() int { return t.C }

// Row returns row i as a slice of length Cols (sharing storage).
func (t *HostTensor) Row(i int) []float32 {
	o := t.Off + i*t.Stride
	return t.Data[o : o+t.C : o+t.C]
}

// Contiguous reports whether the rows are stored back to back.
func (t *HostTensor) Contiguous() bool { return t.Stride == t.C || t.R <= 1 }

// NewHostTensor allocates a zeroed rows × cols host tensor.
func NewHostTensor(rows, cols int) (*HostTensor, error) {
	if rows < 0 || cols < 0 || (rows > 0 && cols > math.MaxInt32/rows) {
		return nil, fmt.Errorf("backend: bad tensor shape %d×%d", rows, cols)
	}
	return &HostTensor{Data: make([]float32, rows*cols), R: rows, C: cols, Stride: cols}, nil
}

// AsHost returns t as a *HostTensor or an error naming the op.
func AsHost(op string, t Tensor) (*HostTensor, error) {
	h, ok := t.(*HostTensor)
	if !ok || h == nil {
		return nil, fmt.Errorf("%s: tensor %T is not a host tensor", op, t)
	}
	return h, nil
}

// SliceHost is Backend.Slice for host tensors.
func SliceHost(t Tensor, row0, rows, col0, cols int) (*HostTensor, error) {
	h, err := AsHost("slice", t)
	if err != nil {
		return nil, err
	}
	if row0 < 0 || rows < 0 || col0 < 0 || cols < 0 || row0+rows > h.R || col0+cols > h.C {
		return nil, fmt.Errorf("slice: [%d:+%d, %d:+%d] out of %d×%d", row0, rows, col0, cols, h.R, h.C)
	}
	return &HostTensor{Data: h.Data, Off: h.Off + row0*h.Stride + col0, R: rows, C: cols, Stride: h.Stride}, nil
}

// HostCache is a Cache in host memory: Data[((layer·NumBlocks + block)·BlockSize + off)·Width + j].
type HostCache struct {
	Data                   []float32
	L, NBlocks, BSize, Wid int
}

// Layers returns the number of layers.
func (c *HostCache) Layers() int { return c.L }

// NumBlocks returns the number of blocks per layer.
func (c *HostCache) NumBlocks() int { return c.NBlocks }

// BlockSize returns the tokens per block.
func (c *HostCache) BlockSize() int { return c.BSize }

// Width returns the values per token row.
func (c *HostCache) Width() int { return c.Wid }

// SlotRow returns the cache row of a slot in a layer (no bounds checks beyond Go's).
func (c *HostCache) SlotRow(layer, slot int) []float32 {
	o := (layer*c.NBlocks*c.BSize + slot) * c.Wid
	return c.Data[o : o+c.Wid : o+c.Wid]
}

// NewHostCache allocates a zeroed host cache.
func NewHostCache(layers, numBlocks, blockSize, width int) (*HostCache, error) {
	if layers <= 0 || numBlocks <= 0 || blockSize <= 0 || width <= 0 {
		return nil, fmt.Errorf("backend: bad cache shape layers=%d blocks=%d block_size=%d width=%d", layers, numBlocks, blockSize, width)
	}
	n := int64(layers) * int64(numBlocks) * int64(blockSize) * int64(width)
	if n > math.MaxInt32*8 {
		return nil, fmt.Errorf("backend: cache of %d values is too large", n)
	}
	return &HostCache{Data: make([]float32, n), L: layers, NBlocks: numBlocks, BSize: blockSize, Wid: width}, nil
}

// HostRope is a RopeTable in host memory: Cos/Sin[t·Pairs + i] = cos/sin(float32(t)·freqs[i]).
type HostRope struct {
	Cos, Sin []float32
	P, Max   int
}

// Pairs returns the number of rotated pairs.
func (r *HostRope) Pairs() int { return r.P }

// MaxPos returns the number of positions.
func (r *HostRope) MaxPos() int { return r.Max }

// NewHostRope computes the cos/sin table (angles in float32, cos/sin evaluated in
// float64 and rounded to float32, like torch.polar on the CPU).
func NewHostRope(freqs []float32, maxPos int) (*HostRope, error) {
	if len(freqs) == 0 || maxPos <= 0 {
		return nil, fmt.Errorf("backend: bad rope table: %d pairs, %d positions", len(freqs), maxPos)
	}
	p := len(freqs)
	r := &HostRope{Cos: make([]float32, maxPos*p), Sin: make([]float32, maxPos*p), P: p, Max: maxPos}
	for t := 0; t < maxPos; t++ {
		for i, f := range freqs {
			a := float64(float32(t) * f)
			r.Cos[t*p+i] = float32(math.Cos(a))
			r.Sin[t*p+i] = float32(math.Sin(a))
		}
	}
	return r, nil
}

// CheckShape returns an error unless t is rows × cols (a negative value matches any).
func CheckShape(op, name string, t Tensor, rows, cols int) error {
	if t == nil {
		return fmt.Errorf("%s: %s is nil", op, name)
	}
	if (rows >= 0 && t.Rows() != rows) || (cols >= 0 && t.Cols() != cols) {
		return fmt.Errorf("%s: %s is %d×%d, want %s×%s", op, name, t.Rows(), t.Cols(), dim(rows), dim(cols))
	}
	return nil
}

func dim(v int) string {
	if v < 0 {
		return "any"
	}
	return fmt.Sprint(v)
}
