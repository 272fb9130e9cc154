package backend

import (
	"fmt"
	"math"
	"sort"
)

// HostWeightRef is the Weight handle of Reference (and of backends that keep the host
// layout): it wraps the validated HostWeight.
type HostWeightRef struct{ W *HostWeight }

// Name returns the weight's name.
func (w *HostWeightRef) Name() string { return w.W.Name }

// DType returns the storage type.
func (w *HostWeightRef) DType() DType { return w.W.DType }

// N returns the number of output channels.
func (w *HostWeightRef) N() int { return w.W.N }

// K returns the number of input channels.
func (w *HostWeightRef) K() int { return w.W.K }

// Bytes returns the memory the weight's data holds.
func (w *HostWeightRef) Bytes() int64 {
	h := w.W
	return 4*int64(len(h.F32)) + 2*int64(len(h.BF16)) + int64(len(h.Q)) + 4*int64(len(h.Scale))
}

// AsHostWeight returns the HostWeight behind a handle made by Reference.LoadWeight (or
// by a backend that uses HostWeightRef).
func AsHostWeight(op string, w Weight) (*HostWeight, error) {
	h, ok := w.(*HostWeightRef)
	if !ok || h == nil {
		return nil, fmt.Errorf("%s: weight %T is not a host weight", op, w)
	}
	return h.W, nil
}

// Reference is the plain-Go implementation of every op: straightforward loops with
// float64 accumulation, used as the oracle in tests. It is not fast. Create the ranks of
// a group with NewReferenceGroup.
type Reference struct {
	rank int
	comm *Comm
}

// NewReferenceGroup returns the W rank backends of a reference group sharing one
// communicator.
func NewReferenceGroup(worldSize int) ([]Backend, error) {
	if worldSize <= 0 {
		return nil, fmt.Errorf("backend: bad world size %d", worldSize)
	}
	c := NewComm(worldSize)
	out := make([]Backend, worldSize)
	for r := range out {
		out[r] = NewReference(r, c)
	}
	return out, nil
}

// NewReference returns rank rank of a group using comm.
func NewReference(rank int, comm *Comm) *Reference { return &Reference{rank: rank, comm: comm} }

// Comm returns the group's communicator.
func (b *Reference) Comm() *Comm { return b.comm }

// AbortCollectives aborts the group's collectives (backend.Aborter).
func (b *Reference) AbortCollectives(cause error) { b.comm.Abort(cause) }

// ResetCollectives re-arms the group's collectives (backend.Aborter).
func (b *Reference) ResetCollectives() { b.comm.Reset() }

// Name returns "reference".
func (b *Reference) Name() string { return "reference" }

// Rank returns this backend's rank.
func (b *Reference) Rank() int { return b.rank }

// WorldSize returns the group size.
func (b *Reference) WorldSize() int { return b.comm.World() }

// Close does nothing (host memory is garbage collected).
func (b *Reference) Close() error { return nil }

// NewTensor allocates a zeroed host tensor.
func (b *Reference) NewTensor(rows, cols int) (Tensor, error) { return NewHostTensor(rows, cols) }

// Slice returns a view of t.
func (b *Reference) Slice(t Tensor, row0, rows, col0, cols int) (Tensor, error) {
	return SliceHost(t, row0, rows, col0, cols)
}

// Write copies src into t.
func (b *Reference) Write(t Tensor, src []float32) error {
	h, err := AsHost("write", t)
	if err != nil {
		return err
	}
	if len(src) != h.R*h.C {
		return fmt.Errorf("write: %d values for a %d×%d tensor", len(src), h.R, h.C)
	}
	for i := 0; i < h.R; i++ {
		copy(h.Row(i), src[i*h.C:])
	}
	return nil
}

// Read copies t into dst.
func (b *Reference) Read(t Tensor, dst []float32) error {
	h, err := AsHost("read", t)
	if err != nil {
		return err
	}
	if len(dst) != h.R*h.C {
		return fmt.Errorf("read: %d values for a %d×%d tensor", len(dst), h.R, h.C)
	}
	for i := 0; i < h.R; i++ {
		copy(dst[i*h.C:], h.Row(i))
	}
	return nil
}

// LoadWeight validates hw and wraps it.
func (b *Reference) LoadWeight(hw *HostWeight) (Weight, error) {
	if err := hw.Validate(); err != nil {
		return nil, err
	}
	return &HostWeightRef{W: hw}, nil
}

// NewCache allocates a host cache.
func (b *Reference) NewCache(layers, numBlocks, blockSize, width int) (Cache, error) {
	return NewHostCache(layers, numBlocks, blockSize, width)
}

// NewRopeTable computes the host cos/sin table.
func (b *Reference) NewRopeTable(freqs []float32, maxPos int) (RopeTable, error) {
	return NewHostRope(freqs, maxPos)
}

// Embedding looks up vocab-parallel rows.
func (b *Reference) Embedding(out Tensor, table Weight, ids []int32, rowOffset int) error {
	o, err := AsHost("embedding", out)
	if err != nil {
		return err
	}
	w, err := AsHostWeight("embedding", table)
	if err != nil {
		return err
	}
	if err := CheckEmbedding(o, w, ids); err != nil {
		return err
	}
	for i, id := range ids {
		row := o.Row(i)
		r := int(id) - rowOffset
		if r < 0 || r >= w.N {
			clear(row)
			continue
		}
		for k := range row {
			row[k] = w.At(r, k)
		}
	}
	return nil
}

// CheckEmbedding validates Embedding's arguments.
func CheckEmbedding(out Tensor, w *HostWeight, ids []int32) error {
	if w.DType != F32 && w.DType != BF16 {
		return fmt.Errorf("embedding: table %s has dtype %v, want F32 or BF16", w.Name, w.DType)
	}
	return CheckShape("embedding", "out", out, len(ids), w.K)
}

// RMSNorm normalises rows.
func (b *Reference) RMSNorm(out, x Tensor, w Weight, eps float32) error {
	o, xh, wh, err := unaryArgs("rmsnorm", out, x, w)
	if err != nil {
		return err
	}
	if err := CheckRMSNorm(o, xh, wh); err != nil {
		return err
	}
	for i := 0; i < xh.R; i++ {
		xr, or := xh.Row(i), o.Row(i)
		var ss float64
		for _, v := range xr {
			ss += float64(v) * float64(v)
		}
		r := float32(1 / math.Sqrt(ss/float64(len(xr))+float64(eps)))
		for j, v := range xr {
			or[j] = v * r * wh.At(j, 0)
		}
	}
	return nil
}

// CheckRMSNorm validates RMSNorm's arguments.
func CheckRMSNorm(out, x Tensor, w *HostWeight) error {
	if w.K != 1 || w.N != x.Cols() {
		return fmt.Errorf("rmsnorm: weight %s is %d×%d, want %d×1", w.Name, w.N, w.K, x.Cols())
	}
	if w.DType != F32 && w.DType != BF16 {
		return fmt.Errorf("rmsnorm: weight %s has dtype %v", w.Name, w.DType)
	}
	return CheckShape("rmsnorm", "out", out, x.Rows(), x.Cols())
}

func unaryArgs(op string, out, x Tensor, w Weight) (*HostTensor, *HostTensor, *HostWeight, error) {
	o, err := AsHost(op, out)
	if err != nil {
		return nil, nil, nil, err
	}
	xh, err := AsHost(op, x)
	if err != nil {
		return nil, nil, nil, err
	}
	wh, err := AsHostWeight(op, w)
	if err != nil {
		return nil, nil, nil, err
	}
	return o, xh, wh, nil
}

// Linear computes out = x · Wᵀ.
func (b *Reference) Linear(out, x Tensor, w Weight) error {
	o, xh, wh, err := unaryArgs("linear", out, x, w)
	if err != nil {
		return err
	}
	if err := CheckLinear("linear", o, xh, wh); err != nil {
		return err
	}
	refLinear(o, xh, wh, 0, wh.N, 0)
	return nil
}

// CheckLinear validates Linear's arguments.
func CheckLinear(op string, out, x Tensor, w *HostWeight) error {
	if x.Cols() != w.K {
		return fmt.Errorf("%s: x is %d×%d but weight %s is %d×%d", op, x.Rows(), x.Cols(), w.Name, w.N, w.K)
	}
	return CheckShape(op, "out of "+w.Name, out, x.Rows(), w.N)
}

// refLinear computes out[:, 0:n1-n0] = x[:, xc0:xc0+K] · W[n0:n1]ᵀ.
func refLinear(o, x *HostTensor, w *HostWeight, n0, n1, xc0 int) {
	wrow := make([]float32, w.K)
	for n := n0; n < n1; n++ {
		for k := range wrow {
			wrow[k] = w.At(n, k)
		}
		for i := 0; i < x.R; i++ {
			xr := x.Row(i)[xc0 : xc0+w.K]
			var acc float64
			for k, v := range xr {
				acc += float64(v) * float64(wrow[k])
			}
			o.Row(i)[n-n0] = float32(acc)
		}
	}
}

// HeadLinear computes one Linear per head.
func (b *Reference) HeadLinear(out, x Tensor, w Weight, heads int) error {
	o, xh, wh, err := unaryArgs("head linear", out, x, w)
	if err != nil {
		return err
	}
	if err := CheckHeadLinear(o, xh, wh, heads); err != nil {
		return err
	}
	n := wh.N / heads
	for h := 0; h < heads; h++ {
		ov, _ := SliceHost(o, 0, o.R, h*n, n)
		refLinear(ov, xh, wh, h*n, (h+1)*n, h*wh.K)
	}
	return nil
}

// CheckHeadLinear validates HeadLinear's arguments.
func CheckHeadLinear(out, x Tensor, w *HostWeight, heads int) error {
	if heads <= 0 || w.N%heads != 0 {
		return fmt.Errorf("head linear: weight %s has %d rows, not divisible into %d heads", w.Name, w.N, heads)
	}
	if x.Cols() != heads*w.K {
		return fmt.Errorf("head linear: x has %d columns, want %d heads × %d", x.Cols(), heads, w.K)
	}
	return CheckShape("head linear", "out", out, x.Rows(), w.N)
}

// GroupedLinear applies one weight per consecutive row group.
func (b *Reference) GroupedLinear(out, x Tensor, ws []Weight, counts []int) error {
	o, err := AsHost("grouped linear", out)
	if err != nil {
		return err
	}
	xh, err := AsHost("grouped linear", x)
	if err != nil {
		return err
	}
	hws, err := CheckGrouped(o, xh, ws, counts)
	if err != nil {
		return err
	}
	row := 0
	for g, w := range hws {
		if counts[g] == 0 {
			continue
		}
		xs, _ := SliceHost(xh, row, counts[g], 0, xh.C)
		os, _ := SliceHost(o, row, counts[g], 0, o.C)
		refLinear(os, xs, w, 0, w.N, 0)
		row += counts[g]
	}
	return nil
}

// CheckGrouped validates GroupedLinear's arguments and returns the host weights.
func CheckGrouped(out, x Tensor, ws []Weight, counts []int) ([]*HostWeight, error) {
	hws := make([]*HostWeight, len(ws))
	for g, w := range ws {
		h, err := AsHostWeight("grouped linear", w)
		if err != nil {
			return nil, err
		}
		hws[g] = h
	}
	if err := CheckGroupedShapes(out, x, ws, counts); err != nil {
		return nil, err
	}
	return hws, nil
}

// CheckGroupedShapes validates GroupedLinear's arguments through the Weight interface,
// for backends whose weight handles are their own; ws must hold valid handles (no nil
// pointers behind the interfaces).
func CheckGroupedShapes(out, x Tensor, ws []Weight, counts []int) error {
	if len(ws) != len(counts) {
		return fmt.Errorf("grouped linear: %d weights but %d counts", len(ws), len(counts))
	}
	total := 0
	for g, w := range ws {
		if counts[g] < 0 {
			return fmt.Errorf("grouped linear: negative count %d", counts[g])
		}
		total += counts[g]
		if w.K() != x.Cols() || w.N() != out.Cols() {
			return fmt.Errorf("grouped linear: weight %s is %d×%d, want %d×%d", w.Name(), w.N(), w.K(), out.Cols(), x.Cols())
		}
	}
	if total != x.Rows() || out.Rows() != x.Rows() {
		return fmt.Errorf("grouped linear: counts sum to %d, x has %d rows, out %d", total, x.Rows(), out.Rows())
	}
	return nil
}

// Rope rotates interleaved pairs in place.
func (b *Reference) Rope(x Tensor, heads int, pos []int32, table RopeTable) error {
	xh, err := AsHost("rope", x)
	if err != nil {
		return err
	}
	rt, ok := table.(*HostRope)
	if !ok {
		return fmt.Errorf("rope: table %T is not a host table", table)
	}
	if err := CheckRope(xh, heads, pos, rt); err != nil {
		return err
	}
	p := rt.P
	for i := 0; i < xh.R; i++ {
		row := xh.Row(i)
		cs, sn := rt.Cos[int(pos[i])*p:][:p], rt.Sin[int(pos[i])*p:][:p]
		for h := 0; h < heads; h++ {
			hr := row[h*2*p : (h+1)*2*p]
			for j := 0; j < p; j++ {
				a, bb := hr[2*j], hr[2*j+1]
				hr[2*j] = a*cs[j] - bb*sn[j]
				hr[2*j+1] = a*sn[j] + bb*cs[j]
			}
		}
	}
	return nil
}

// CheckRope validates Rope's arguments.
func CheckRope(x Tensor, heads int, pos []int32, table RopeTable) error {
	if heads <= 0 || x.Cols() != heads*2*table.Pairs() {
		return fmt.Errorf("rope: x has %d columns, want %d heads × %d", x.Cols(), heads, 2*table.Pairs())
	}
	if len(pos) != x.Rows() {
		return fmt.Errorf("rope: %d positions for %d rows", len(pos), x.Rows())
	}
	for _, p := range pos {
		if p < 0 || int(p) >= table.MaxPos() {
			return fmt.Errorf("rope: position %d outside [0,%d)", p, table.MaxPos())
		}
	}
	return nil
}

// CacheWrite stores rows at slots.
func (b *Reference) CacheWrite(c Cache, layer int, kv Tensor, slots []int32) error {
	hc, kh, err := cacheArgs("cache write", c, kv)
	if err != nil {
		return err
	}
	if err := CheckCacheWrite(hc, layer, kh, slots); err != nil {
		return err
	}
	for i, s := range slots {
		copy(hc.SlotRow(layer, int(s)), kh.Row(i))
	}
	return nil
}

func cacheArgs(op string, c Cache, t Tensor) (*HostCache, *HostTensor, error) {
	hc, ok := c.(*HostCache)
	if !ok || hc == nil {
		return nil, nil, fmt.Errorf("%s: cache %T is not a host cache", op, c)
	}
	h, err := AsHost(op, t)
	return hc, h, err
}

// CheckCacheWrite validates CacheWrite's arguments.
func CheckCacheWrite(c Cache, layer int, kv Tensor, slots []int32) error {
	if layer < 0 || layer >= c.Layers() {
		return fmt.Errorf("cache write: layer %d outside [0,%d)", layer, c.Layers())
	}
	if err := CheckShape("cache write", "kv", kv, len(slots), c.Width()); err != nil {
		return err
	}
	n := c.NumBlocks() * c.BlockSize()
	for _, s := range slots {
		if s < 0 || int(s) >= n {
			return fmt.Errorf("cache write: slot %d outside [0,%d)", s, n)
		}
	}
	return nil
}

// CacheRead gathers a sequence's rows.
func (b *Reference) CacheRead(out Tensor, c Cache, layer int, blocks []int32) error {
	hc, o, err := cacheArgs("cache read", c, out)
	if err != nil {
		return err
	}
	if layer < 0 || layer >= hc.L {
		return fmt.Errorf("cache read: layer %d outside [0,%d)", layer, hc.L)
	}
	if err := CheckShape("cache read", "out", o, -1, hc.Wid); err != nil {
		return err
	}
	if err := CheckBlocks(hc, blocks, o.R); err != nil {
		return err
	}
	for t := 0; t < o.R; t++ {
		copy(o.Row(t), hc.SlotRow(layer, Slot(blocks, hc.BSize, t)))
	}
	return nil
}

// Slot returns the cache slot of position t for a block table.
func Slot(blocks []int32, blockSize, t int) int {
	return int(blocks[t/blockSize])*blockSize + t%blockSize
}

// CheckBlocks checks that blocks covers n positions with valid block ids.
func CheckBlocks(c Cache, blocks []int32, n int) error {
	need := (n + c.BlockSize() - 1) / c.BlockSize()
	if len(blocks) < need {
		return fmt.Errorf("block table has %d blocks, %d positions need %d", len(blocks), n, need)
	}
	for _, bl := range blocks[:need] {
		if bl < 0 || int(bl) >= c.NumBlocks() {
			return fmt.Errorf("block id %d outside [0,%d)", bl, c.NumBlocks())
		}
	}
	return nil
}

// MLAAttention is absorbed attention over the paged latent cache.
func (b *Reference) MLAAttention(out, qAbs, qPe Tensor, c Cache, layer int, heads int, seqs []AttnSeq, scale float32) error {
	hc, o, err := cacheArgs("mla attention", c, out)
	if err != nil {
		return err
	}
	qa, err := AsHost("mla attention", qAbs)
	if err != nil {
		return err
	}
	qp, err := AsHost("mla attention", qPe)
	if err != nil {
		return err
	}
	lc, r, err := CheckMLA(o, qa, qp, hc, layer, heads, seqs)
	if err != nil {
		return err
	}
	for _, s := range seqs {
		for i := 0; i < s.N; i++ {
			T := s.Pos + i + 1
			sc := make([]float64, T)
			for h := 0; h < heads; h++ {
				qa := qa.Row(s.Row + i)[h*lc : (h+1)*lc]
				qp := qp.Row(s.Row + i)[h*r : (h+1)*r]
				row := func(t int) []float32 { return hc.SlotRow(layer, Slot(s.Blocks, hc.BSize, t)) }
				attendOne(o.Row(s.Row + i)[h*lc:(h+1)*lc], sc, scale,
					func(t int) float64 { k := row(t); return dot64(dot64(0, qa, k), qp, k[lc:]) },
					func(t int) []float32 { return row(t)[:lc] })
			}
		}
	}
	return nil
}

// attendOne is one query head's attention in float64: out = Σ_t p_t · value(t) with
// p = softmax_t(score(t) · scale) over the len(sc) keys; sc is scratch of that length.
func attendOne(out []float32, sc []float64, scale float32, score func(t int) float64, value func(t int) []float32) {
	mx := math.Inf(-1)
	for t := range sc {
		sc[t] = score(t) * float64(scale)
		mx = math.Max(mx, sc[t])
	}
	var sum float64
	for t := range sc {
		sc[t] = math.Exp(sc[t] - mx)
		sum += sc[t]
	}
	acc := make([]float64, len(out))
	for t := range sc {
		p := sc[t] / sum
		for j, v := range value(t) {
			acc[j] += p * float64(v)
		}
	}
	for j := range out {
		out[j] = float32(acc[j])
	}
}

// dot64 adds the float64 dot product of a and b[:len(a)] to d.
func dot64(d float64, a, b []float32) float64 {
	for j, v := range a {
		d += float64(v) * float64(b[j])
	}
	return d
}

// CheckMLA validates MLAAttention's arguments and returns the latent and rope widths.
func CheckMLA(out, qAbs, qPe Tensor, c Cache, layer, heads int, seqs []AttnSeq) (lc, r int, err error) {
	if heads <= 0 || qAbs.Cols()%heads != 0 || qPe.Cols()%heads != 0 {
		return 0, 0, fmt.Errorf("mla attention: q widths %d, %d not divisible by %d heads", qAbs.Cols(), qPe.Cols(), heads)
	}
	lc, r = qAbs.Cols()/heads, qPe.Cols()/heads
	if lc+r != c.Width() {
		return 0, 0, fmt.Errorf("mla attention: latent %d + rope %d != cache width %d", lc, r, c.Width())
	}
	if layer < 0 || layer >= c.Layers() {
		return 0, 0, fmt.Errorf("mla attention: layer %d outside [0,%d)", layer, c.Layers())
	}
	if qPe.Rows() != qAbs.Rows() {
		return 0, 0, fmt.Errorf("mla attention: qPe has %d rows, qAbs %d", qPe.Rows(), qAbs.Rows())
	}
	if err := CheckShape("mla attention", "out", out, qAbs.Rows(), qAbs.Cols()); err != nil {
		return 0, 0, err
	}
	for _, s := range seqs {
		if s.Row < 0 || s.N < 0 || s.Pos < 0 || s.Row+s.N > qAbs.Rows() {
			return 0, 0, fmt.Errorf("mla attention: sequence rows [%d,+%d) outside %d", s.Row, s.N, qAbs.Rows())
		}
		if err := CheckBlocks(c, s.Blocks, s.Pos+s.N); err != nil {
			return 0, 0, fmt.Errorf("mla attention: %w", err)
		}
	}
	return lc, r, nil
}

// Attention is plain multi-head attention with a shared rope key.
func (b *Reference) Attention(out, qNope, qPe, kNope, kPe, v Tensor, heads int, seqs []AttnSeq, scale float32) error {
	var hs [6]*HostTensor
	for i, t := range []Tensor{out, qNope, qPe, kNope, kPe, v} {
		h, err := AsHost("attention", t)
		if err != nil {
			return err
		}
		hs[i] = h
	}
	o, qn, qp, kn, kp, vv := hs[0], hs[1], hs[2], hs[3], hs[4], hs[5]
	dn, r, dv, err := CheckAttention(o, qn, qp, kn, kp, vv, heads, seqs)
	if err != nil {
		return err
	}
	for _, s := range seqs {
		for i := 0; i < s.N; i++ {
			T := s.Pos + i + 1
			sc := make([]float64, T)
			for h := 0; h < heads; h++ {
				qnr := qn.Row(s.Row + i)[h*dn : (h+1)*dn]
				qpr := qp.Row(s.Row + i)[h*r : (h+1)*r]
				attendOne(o.Row(s.Row + i)[h*dv:(h+1)*dv], sc, scale,
					func(t int) float64 {
						return dot64(dot64(0, qnr, kn.Row(s.KeyRow + t)[h*dn:(h+1)*dn]), qpr, kp.Row(s.KeyRow+t))
					},
					func(t int) []float32 { return vv.Row(s.KeyRow + t)[h*dv : (h+1)*dv] })
			}
		}
	}
	return nil
}

// CheckAttention validates Attention's arguments and returns the nope, rope and value
// head widths.
func CheckAttention(out, qNope, qPe, kNope, kPe, v Tensor, heads int, seqs []AttnSeq) (dn, r, dv int, err error) {
	if heads <= 0 || qNope.Cols()%heads != 0 || qPe.Cols()%heads != 0 || v.Cols()%heads != 0 {
		return 0, 0, 0, fmt.Errorf("attention: widths not divisible by %d heads", heads)
	}
	dn, r, dv = qNope.Cols()/heads, qPe.Cols()/heads, v.Cols()/heads
	M, T := qNope.Rows(), kNope.Rows()
	if err := CheckShape("attention", "qPe", qPe, M, heads*r); err != nil {
		return 0, 0, 0, err
	}
	if err := CheckShape("attention", "kNope", kNope, T, heads*dn); err != nil {
		return 0, 0, 0, err
	}
	if err := CheckShape("attention", "kPe", kPe, T, r); err != nil {
		return 0, 0, 0, err
	}
	if err := CheckShape("attention", "v", v, T, heads*dv); err != nil {
		return 0, 0, 0, err
	}
	if err := CheckShape("attention", "out", out, M, heads*dv); err != nil {
		return 0, 0, 0, err
	}
	for _, s := range seqs {
		if s.Row < 0 || s.N < 0 || s.Pos < 0 || s.Row+s.N > M || s.KeyRow < 0 || s.KeyRow+s.Pos+s.N > T {
			return 0, 0, 0, fmt.Errorf("attention: sequence rows [%d,+%d) keys [%d,+%d) outside %d×%d", s.Row, s.N, s.KeyRow, s.Pos+s.N, M, T)
		}
	}
	return dn, r, dv, nil
}

// MoEGate routes rows to experts.
func (b *Reference) MoEGate(logits Tensor, bias Weight, p GateParams) ([]int32, []float32, error) {
	lh, err := AsHost("moe gate", logits)
	if err != nil {
		return nil, nil, err
	}
	var bh *HostWeight
	if bias != nil {
		if bh, err = AsHostWeight("moe gate", bias); err != nil {
			return nil, nil, err
		}
	}
	if err := CheckGate(lh, bh, p); err != nil {
		return nil, nil, err
	}
	idx := make([]int32, lh.R*p.TopK)
	w := make([]float32, lh.R*p.TopK)
	g := NewGateScratch(lh.C)
	for i := 0; i < lh.R; i++ {
		GateRow(lh.Row(i), bh, p, g, idx[i*p.TopK:(i+1)*p.TopK], w[i*p.TopK:(i+1)*p.TopK])
	}
	return idx, w, nil
}

// CheckGate validates MoEGate's arguments.
func CheckGate(logits Tensor, bias *HostWeight, p GateParams) error {
	e := logits.Cols()
	if p.TopK <= 0 || p.TopK > e {
		return fmt.Errorf("moe gate: top-k %d with %d experts", p.TopK, e)
	}
	if p.Groups <= 0 || e%p.Groups != 0 || p.TopGroups <= 0 || p.TopGroups > p.Groups {
		return fmt.Errorf("moe gate: %d experts in %d groups, keep %d", e, p.Groups, p.TopGroups)
	}
	if p.TopGroups*(e/p.Groups) < p.TopK {
		return fmt.Errorf("moe gate: %d groups of %d experts cannot give top-%d", p.TopGroups, e/p.Groups, p.TopK)
	}
	if p.Score != Sigmoid && p.Score != Softmax {
		return fmt.Errorf("moe gate: bad score function %d", p.Score)
	}
	if p.Groups > 1 && p.GroupScore != GroupTop2Sum && p.GroupScore != GroupMax {
		return fmt.Errorf("moe gate: bad group score rule %d", p.GroupScore)
	}
	if bias != nil && (bias.N != e || bias.K != 1 || bias.DType != F32) {
		return fmt.Errorf("moe gate: bias %s is %v %d×%d, want F32 %d×1", bias.Name, bias.DType, bias.N, bias.K, e)
	}
	return nil
}

// GateScratch is per-call scratch memory for GateRow.
type GateScratch struct {
	s, sb  []float32
	gs     []float32
	order  []int
	gorder []int
	keep   []bool
}

// NewGateScratch returns scratch for e experts.
func NewGateScratch(e int) *GateScratch {
	return &GateScratch{s: make([]float32, e), sb: make([]float32, e), order: make([]int, e)}
}

// GateRow routes one token (spec §5.5); idx and w have length p.TopK. It is shared by
// the reference and the CPU backend (routing is a negligible cost).
func GateRow(logits []float32, bias *HostWeight, p GateParams, g *GateScratch, idx []int32, w []float32) {
	e := len(logits)
	s, sb := g.s, g.sb
	if p.Score == Sigmoid {
		for j, l := range logits {
			s[j] = float32(1 / (1 + math.Exp(-float64(l))))
		}
	} else {
		mx := math.Inf(-1)
		for _, l := range logits {
			mx = math.Max(mx, float64(l))
		}
		var sum float64
		for _, l := range logits {
			sum += math.Exp(float64(l) - mx)
		}
		for j, l := range logits {
			s[j] = float32(math.Exp(float64(l)-mx) / sum)
		}
	}
	for j := range s {
		sb[j] = s[j]
		if bias != nil {
			sb[j] += bias.F32[j]
		}
	}
	// Group-limited selection: keep the TopGroups best groups, mask the rest with −inf.
	if p.Groups > 1 && p.TopGroups < p.Groups {
		gsz := e / p.Groups
		if len(g.gs) != p.Groups {
			g.gs, g.gorder, g.keep = make([]float32, p.Groups), make([]int, p.Groups), make([]bool, p.Groups)
		}
		for gi := 0; gi < p.Groups; gi++ {
			grp := sb[gi*gsz : (gi+1)*gsz]
			b1, b2 := float32(math.Inf(-1)), float32(math.Inf(-1))
			for _, v := range grp {
				if v > b1 {
					b1, b2 = v, b1
				} else if v > b2 {
					b2 = v
				}
			}
			if p.GroupScore == GroupTop2Sum && gsz > 1 {
				g.gs[gi] = b1 + b2
			} else {
				g.gs[gi] = b1
			}
			g.gorder[gi] = gi
			g.keep[gi] = false
		}
		sort.SliceStable(g.gorder, func(a, b int) bool { return g.gs[g.gorder[a]] > g.gs[g.gorder[b]] })
		for _, gi := range g.gorder[:p.TopGroups] {
			g.keep[gi] = true
		}
		for gi := 0; gi < p.Groups; gi++ {
			if !g.keep[gi] {
				for j := gi * gsz; j < (gi+1)*gsz; j++ {
					sb[j] = float32(math.Inf(-1))
				}
			}
		}
	}
	for j := range g.order {
		g.order[j] = j
	}
	sort.SliceStable(g.order, func(a, b int) bool { return sb[g.order[a]] > sb[g.order[b]] })
	var sum float64
	for k := 0; k < p.TopK; k++ {
		idx[k] = int32(g.order[k])
		w[k] = s[g.order[k]]
		sum += float64(w[k])
	}
	for k := range w {
		if p.Normalize {
			w[k] = float32(float64(w[k]) / sum)
		}
		w[k] *= p.RouteScale
	}
}

// GatherRows copies rows.
func (b *Reference) GatherRows(out, x Tensor, rows []int32) error {
	o, err := AsHost("gather rows", out)
	if err != nil {
		return err
	}
	xh, err := AsHost("gather rows", x)
	if err != nil {
		return err
	}
	if err := CheckShape("gather rows", "out", o, len(rows), xh.C); err != nil {
		return err
	}
	for i, r := range rows {
		if r < 0 || int(r) >= xh.R {
			return fmt.Errorf("gather rows: row %d outside [0,%d)", r, xh.R)
		}
		copy(o.Row(i), xh.Row(int(r)))
	}
	return nil
}

// CheckSwiGLU validates SwiGLU's arguments: x holds gate | up, out is half as wide.
func CheckSwiGLU(out, x Tensor) error {
	if x.Cols()%2 != 0 {
		return fmt.Errorf("swiglu: x has an odd number of columns %d", x.Cols())
	}
	return CheckShape("swiglu", "out", out, x.Rows(), x.Cols()/2)
}

// SwiGLU computes silu(gate) ⊙ up.
func (b *Reference) SwiGLU(out, x Tensor) error {
	o, err := AsHost("swiglu", out)
	if err != nil {
		return err
	}
	xh, err := AsHost("swiglu", x)
	if err != nil {
		return err
	}
	if err := CheckSwiGLU(o, xh); err != nil {
		return err
	}
	m := xh.C / 2
	for i := 0; i < xh.R; i++ {
		xr, or := xh.Row(i), o.Row(i)
		for j := 0; j < m; j++ {
			g := xr[j]
			or[j] = g / (1 + float32(math.Exp(-float64(g)))) * xr[m+j]
		}
	}
	return nil
}

// MoECombine accumulates weighted expert outputs per token.
func (b *Reference) MoECombine(out, y Tensor, tok []int32, w []float32) error {
	o, err := AsHost("moe combine", out)
	if err != nil {
		return err
	}
	yh, err := AsHost("moe combine", y)
	if err != nil {
		return err
	}
	if err := CheckCombine(o, yh, tok, w); err != nil {
		return err
	}
	for i := 0; i < o.R; i++ {
		clear(o.Row(i))
	}
	for r, t := range tok {
		or, yr := o.Row(int(t)), yh.Row(r)
		for j, v := range yr {
			or[j] += w[r] * v
		}
	}
	return nil
}

// CheckCombine validates MoECombine's arguments.
func CheckCombine(out, y Tensor, tok []int32, w []float32) error {
	if len(tok) != len(w) || len(tok) != y.Rows() {
		return fmt.Errorf("moe combine: %d tokens, %d weights, %d rows", len(tok), len(w), y.Rows())
	}
	if out.Cols() != y.Cols() {
		return fmt.Errorf("moe combine: out has %d columns, y %d", out.Cols(), y.Cols())
	}
	for _, t := range tok {
		if t < 0 || int(t) >= out.Rows() {
			return fmt.Errorf("moe combine: token %d outside [0,%d)", t, out.Rows())
		}
	}
	return nil
}

// Add computes out = a + b.
func (b *Reference) Add(out, a, c Tensor) error {
	o, err := AsHost("add", out)
	if err != nil {
		return err
	}
	ah, err := AsHost("add", a)
	if err != nil {
		return err
	}
	ch, err := AsHost("add", c)
	if err != nil {
		return err
	}
	if err := CheckShape("add", "b", ch, ah.R, ah.C); err != nil {
		return err
	}
	if err := CheckShape("add", "out", o, ah.R, ah.C); err != nil {
		return err
	}
	for i := 0; i < ah.R; i++ {
		or, ar, cr := o.Row(i), ah.Row(i), ch.Row(i)
		for j := range or {
			or[j] = ar[j] + cr[j]
		}
	}
	return nil
}

// AllReduce sums over ranks.
func (b *Reference) AllReduce(t Tensor) error { return HostAllReduce(b.comm, b.rank, t) }

// AllGather concatenates columns over ranks.
func (b *Reference) AllGather(out, in Tensor) error { return HostAllGather(b.comm, b.rank, out, in) }

// HostAllReduce is AllReduce for host tensors over a Comm.
func HostAllReduce(c *Comm, rank int, t Tensor) error {
	h, err := AsHost("all-reduce", t)
	if err != nil {
		return err
	}
	if c.World() == 1 {
		return nil
	}
	if h.Contiguous() {
		return c.AllReduce(rank, h.Data[h.Off:h.Off+h.R*h.C])
	}
	buf := make([]float32, h.R*h.C)
	for i := 0; i < h.R; i++ {
		copy(buf[i*h.C:], h.Row(i))
	}
	if err := c.AllReduce(rank, buf); err != nil {
		return err
	}
	for i := 0; i < h.R; i++ {
		copy(h.Row(i), buf[i*h.C:])
	}
	return nil
}

// HostAllGather is AllGather for host tensors over a Comm.
func HostAllGather(c *Comm, rank int, out, in Tensor) error {
	o, err := AsHost("all-gather", out)
	if err != nil {
		return err
	}
	ih, err := AsHost("all-gather", in)
	if err != nil {
		return err
	}
	if err := CheckShape("all-gather", "out", o, ih.R, ih.C*c.World()); err != nil {
		return err
	}
	part := make([]float32, ih.R*ih.C)
	for i := 0; i < ih.R; i++ {
		copy(part[i*ih.C:], ih.Row(i))
	}
	all := make([]float32, len(part)*c.World())
	if err := c.AllGather(rank, part, all); err != nil {
		return err
	}
	for r := 0; r < c.World(); r++ {
		for i := 0; i < ih.R; i++ {
			copy(o.Row(i)[r*ih.C:(r+1)*ih.C], all[r*len(part)+i*ih.C:])
		}
	}
	return nil
}

// ArgMax returns per-row argmax.
func (b *Reference) ArgMax(x Tensor) ([]int32, error) {
	idx, _, err := b.TopN(x, 1)
	return idx, err
}

// TopN returns per-row top n values.
func (b *Reference) TopN(x Tensor, n int) ([]int32, []float32, error) {
	xh, err := AsHost("top-n", x)
	if err != nil {
		return nil, nil, err
	}
	if n <= 0 || n > xh.C {
		return nil, nil, fmt.Errorf("top-n: n=%d with %d columns", n, xh.C)
	}
	idx := make([]int32, 0, xh.R*n)
	val := make([]float32, 0, xh.R*n)
	for i := 0; i < xh.R; i++ {
		ri, rv := TopNRow(xh.Row(i), n)
		idx = append(idx, ri...)
		val = append(val, rv...)
	}
	return idx, val, nil
}

// TopNRow returns the n largest values of row (descending, ties: lowest index; NaN
// never wins).
func TopNRow(row []float32, n int) ([]int32, []float32) {
	idx := make([]int32, 0, n+1)
	val := make([]float32, 0, n+1)
	for j, v := range row {
		if v != v {
			continue
		}
		if len(val) == n && v <= val[n-1] {
			continue
		}
		p := len(val)
		for p > 0 && v > val[p-1] {
			p--
		}
		idx = append(idx, 0)
		val = append(val, 0)
		copy(idx[p+1:], idx[p:])
		copy(val[p+1:], val[p:])
		idx[p], val[p] = int32(j), v
		if len(val) > n {
			idx, val = idx[:n], val[:n]
		}
	}
	for len(val) < n { // all NaN
		idx = append(idx, 0)
		val = append(val, float32(math.NaN()))
	}
	return idx, val
}
