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

// maxGatingExperts is aclnnMoeGatingTopK's expert limit.
const maxGatingExperts = 2048

// MoEGate routes tokens: aclnnMoeGatingTopK for sigmoid scoring with renormalisation
// (V3); softmax scoring (V2-style configs) is composed on the host from the downloaded
// logits with the reference routing (backend.GateRow), a documented fallback.
func (b *Backend) MoEGate(logits backend.Tensor, bias backend.Weight, p backend.GateParams) ([]int32, []float32, error) {
	ts, err := b.tensors("moe gate", logits)
	if err != nil {
		return nil, nil, err
	}
	var bw *Weight
	var bh *backend.HostWeight
	if bias != nil {
		if bw, err = asWeight("moe gate", bias); err != nil {
			return nil, nil, err
		}
		if bw.hostV == nil {
			return nil, nil, fmt.Errorf("moe gate: bias %s is not a vector", bw.name)
		}
		bh = backend.Vector(bw.name, bw.hostV)
	}
	if err := backend.CheckGate(logits, bh, p); err != nil {
		return nil, nil, err
	}
	m, e, k := logits.Rows(), logits.Cols(), p.TopK
	idx, w := make([]int32, m*k), make([]float32, m*k)
	if m == 0 {
		return idx, w, nil
	}
	lt := ts[0]
	fused := p.Score == backend.Sigmoid && p.Normalize && e <= maxGatingExperts
	err = b.do(func() error {
		if !fused {
			l := make([]float32, m*e)
			if err := b.readView(lt, l); err != nil {
				return err
			}
			g := backend.NewGateScratch(e)
			for i := 0; i < m; i++ {
				backend.GateRow(l[i*e:(i+1)*e], bh, p, g, idx[i*k:(i+1)*k], w[i*k:(i+1)*k])
			}
			return nil
		}
		groups, kg, mode := p.Groups, p.TopGroups, 1
		if p.GroupScore == backend.GroupMax {
			mode = 0
		}
		y, err := b.tmp(m, k, dtF32)
		if err != nil {
			return err
		}
		iv, err := b.tmp(m, k, dtI32)
		if err != nil {
			return err
		}
		err = b.op("aclnnMoeGatingTopK", C.F_aclnnMoeGatingTopK, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
			var bt C.uintptr_t
			if bw != nil {
				bt = d.t(bw.vec())
			}
			return C.dsg_gating(d.a.p, d.t(lt.mat()), bt, C.int64_t(k), C.int64_t(kg), C.int64_t(groups), C.int64_t(mode),
				C.double(p.RouteScale), 1e-20, d.t(y), d.t(iv), ws, ex)
		})
		if err != nil {
			return err
		}
		if err := b.w.download(unsafe.Pointer(&w[0]), y.base, 4*m*k); err != nil {
			return err
		}
		return b.w.download(unsafe.Pointer(&idx[0]), iv.base, 4*m*k)
	})
	if err != nil {
		return nil, nil, err
	}
	return idx, w, nil
}

// readView downloads a float32 tensor into dst (rows × cols) on the rank's thread.
func (b *Backend) readView(t *Tensor, dst []float32) error {
	if t.contiguous() {
		return b.w.download(unsafe.Pointer(&dst[0]), t.addr(0, 0), 4*len(dst))
	}
	c, err := b.tmp(t.rows, t.cols, dtF32)
	if err != nil {
		return err
	}
	if err := b.cast(t.mat(), c); err != nil {
		return err
	}
	return b.w.download(unsafe.Pointer(&dst[0]), c.base, 4*len(dst))
}

// GatherRows copies rows with aclnnIndexSelect.
func (b *Backend) GatherRows(out, x backend.Tensor, rows []int32) error {
	ts, err := b.tensors("gather rows", out, x)
	if err != nil {
		return err
	}
	if err := backend.CheckShape("gather rows", "out", out, len(rows), x.Cols()); err != nil {
		return err
	}
	for _, r := range rows {
		if r < 0 || int(r) >= x.Rows() {
			return fmt.Errorf("gather rows: row %d outside [0,%d)", r, x.Rows())
		}
	}
	if len(rows) == 0 {
		return nil
	}
	r64 := i64s(rows)
	return b.do(func() error {
		idx, err := b.uploadTmp(unsafe.Pointer(&r64[0]), len(r64), dtI64)
		if err != nil {
			return err
		}
		return b.indexSelect(ts[1].mat(), idx, ts[0].mat())
	})
}

// SwiGLU runs aclnnSwiGlu (gate half first).
func (b *Backend) SwiGLU(out, x backend.Tensor) error {
	ts, err := b.tensors("swiglu", out, x)
	if err != nil {
		return err
	}
	if x.Cols()%2 != 0 {
		return fmt.Errorf("swiglu: x has an odd number of columns %d", x.Cols())
	}
	if err := backend.CheckShape("swiglu", "out", out, x.Rows(), x.Cols()/2); err != nil {
		return err
	}
	if x.Rows() == 0 {
		return nil
	}
	return b.do(func() error {
		return b.op("aclnnSwiGlu", C.F_aclnnSwiGlu, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
			return C.dsg_swiglu(d.a.p, d.t(ts[1].mat()), -1, d.t(ts[0].mat()), ws, ex)
		})
	})
}

// MoECombine runs aclnnMoeTokenUnpermute: token i's rows are listed in increasing row
// order (the reference's accumulation order), padded with weight-0 entries.
func (b *Backend) MoECombine(out, y backend.Tensor, tok []int32, w []float32) error {
	ts, err := b.tensors("moe combine", out, y)
	if err != nil {
		return err
	}
	if err := backend.CheckCombine(out, y, tok, w); err != nil {
		return err
	}
	o, yt := ts[0], ts[1]
	n := out.Rows()
	if n == 0 {
		return nil
	}
	per := make([][]int, n)
	kmax := 1
	for r, t := range tok {
		per[t] = append(per[t], r)
		kmax = max(kmax, len(per[t]))
	}
	idx := make([]int32, n*kmax)
	probs := make([]float32, n*kmax)
	for i, rows := range per {
		for q, r := range rows {
			idx[i*kmax+q] = int32(r)
			probs[i*kmax+q] = w[r]
		}
	}
	return b.do(func() error {
		if len(tok) == 0 {
			return b.muls(o.mat(), 0, o.mat()) // no expert rows: out = 0 (zero-initialised tensors)
		}
		iv, err := b.uploadTmp(unsafe.Pointer(&idx[0]), len(idx), dtI32)
		if err != nil {
			return err
		}
		pv, err := b.uploadTmp(unsafe.Pointer(&probs[0]), len(probs), dtF32)
		if err != nil {
			return err
		}
		pv.dims, pv.strides = []int64{int64(n), int64(kmax)}, []int64{int64(kmax), 1}
		return b.op("aclnnMoeTokenUnpermute", C.F_aclnnMoeTokenUnpermute, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
			return C.dsg_unpermute(d.a.p, d.t(yt.mat()), d.t(iv), d.t(pv), d.t(o.mat()), ws, ex)
		})
	})
}

// Add runs aclnnAdd (alpha 1); out may equal a or b.
func (b *Backend) Add(out, x, y backend.Tensor) error {
	ts, err := b.tensors("add", out, x, y)
	if err != nil {
		return err
	}
	if err := backend.CheckShape("add", "b", y, x.Rows(), x.Cols()); err != nil {
		return err
	}
	if err := backend.CheckShape("add", "out", out, x.Rows(), x.Cols()); err != nil {
		return err
	}
	if x.Rows() == 0 {
		return nil
	}
	return b.do(func() error { return b.add(ts[1].mat(), ts[2].mat(), ts[0].mat()) })
}

// AllReduce sums t over the group in place with HcclAllReduce (float32, sum); a strided
// view goes through a contiguous scratch copy. It returns after synchronizing the stream:
// every rank then releases its scratch memory at least once per collective, and a rank
// that never reads results still takes part (see README, "Known gaps").
func (b *Backend) AllReduce(t backend.Tensor) error {
	ts, err := b.tensors("all-reduce", t)
	if err != nil {
		return err
	}
	if b.world == 1 || t.Rows()*t.Cols() == 0 {
		return nil
	}
	d := ts[0]
	n := d.rows * d.cols
	return b.do(func() error {
		buf := d.addr(0, 0)
		var c view
		if !d.contiguous() {
			if c, err = b.tmp(d.rows, d.cols, dtF32); err != nil {
				return err
			}
			if err := b.cast(d.mat(), c); err != nil {
				return err
			}
			buf = c.base
		}
		b.w.pending = true
		b.w.count(func(s *Stats) { s.Collectives++ })
		if err := b.g.a.check("HcclAllReduce", C.dsg_allReduce(b.g.a.p, buf, buf, C.uint64_t(n), hcclF32, hcclSum, b.comm, b.w.stream)); err != nil {
			return err
		}
		if !d.contiguous() {
			if err := b.cast(c, d.mat()); err != nil {
				return err
			}
		}
		return b.w.sync()
	})
}

// AllGather concatenates every rank's in along columns into out with HcclAllGather
// (rank-major) and one strided copy.
func (b *Backend) AllGather(out, in backend.Tensor) error {
	ts, err := b.tensors("all-gather", out, in)
	if err != nil {
		return err
	}
	if err := backend.CheckShape("all-gather", "out", out, in.Rows(), in.Cols()*b.world); err != nil {
		return err
	}
	if in.Rows()*in.Cols() == 0 {
		return nil
	}
	o, it := ts[0], ts[1]
	m, n := in.Rows(), in.Cols()
	return b.do(func() error {
		if b.world == 1 {
			return b.cast(it.mat(), o.mat())
		}
		send, err := b.tmp(m, n, dtF32)
		if err != nil {
			return err
		}
		if err := b.cast(it.mat(), send); err != nil {
			return err
		}
		recv, err := b.tmp(b.world*m, n, dtF32)
		if err != nil {
			return err
		}
		b.w.pending = true
		b.w.count(func(s *Stats) { s.Collectives++ })
		if err := b.g.a.check("HcclAllGather", C.dsg_allGather(b.g.a.p, send.base, recv.base, C.uint64_t(m*n), hcclF32, b.comm, b.w.stream)); err != nil {
			return err
		}
		recv.dims, recv.strides = []int64{int64(b.world), int64(m), int64(n)}, []int64{int64(m * n), int64(n), 1}
		if err := b.cast(recv, o.v3(b.world, m, n, n, o.stride, 1, 0)); err != nil {
			return err
		}
		return b.w.sync()
	})
}

// ArgMax runs aclnnArgMax over each row and downloads the indices.
func (b *Backend) ArgMax(x backend.Tensor) ([]int32, error) {
	ts, err := b.tensors("argmax", x)
	if err != nil {
		return nil, err
	}
	if x.Cols() == 0 {
		return nil, fmt.Errorf("argmax: x has no columns")
	}
	m := x.Rows()
	out := make([]int64, m)
	if m > 0 {
		err = b.do(func() error {
			iv, err := b.tmp(m, 1, dtI64)
			if err != nil {
				return err
			}
			iv.dims, iv.strides = []int64{int64(m)}, []int64{1}
			err = b.op("aclnnArgMax", C.F_aclnnArgMax, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
				return C.dsg_argmax(d.a.p, d.t(ts[0].mat()), -1, d.t(iv), ws, ex)
			})
			if err != nil {
				return err
			}
			return b.w.download(unsafe.Pointer(&out[0]), iv.base, 8*m)
		})
		if err != nil {
			return nil, err
		}
	}
	res := make([]int32, m)
	for i, v := range out {
		res[i] = int32(v)
	}
	return res, nil
}

// TopN runs aclnnTopk (largest, sorted) and downloads values and indices.
func (b *Backend) TopN(x backend.Tensor, n int) ([]int32, []float32, error) {
	ts, err := b.tensors("top-n", x)
	if err != nil {
		return nil, nil, err
	}
	if n <= 0 || n > x.Cols() {
		return nil, nil, fmt.Errorf("top-n: n=%d with %d columns", n, x.Cols())
	}
	m := x.Rows()
	vals := make([]float32, m*n)
	i64 := make([]int64, m*n)
	if m > 0 {
		err = b.do(func() error {
			vv, err := b.tmp(m, n, dtF32)
			if err != nil {
				return err
			}
			iv, err := b.tmp(m, n, dtI64)
			if err != nil {
				return err
			}
			err = b.op("aclnnTopk", C.F_aclnnTopk, func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int {
				return C.dsg_topk(d.a.p, d.t(ts[0].mat()), C.int64_t(n), d.t(vv), d.t(iv), ws, ex)
			})
			if err != nil {
				return err
			}
			if err := b.w.download(unsafe.Pointer(&vals[0]), vv.base, 4*m*n); err != nil {
				return err
			}
			return b.w.download(unsafe.Pointer(&i64[0]), iv.base, 8*m*n)
		})
		if err != nil {
			return nil, nil, err
		}
	}
	idx := make([]int32, m*n)
	for i, v := range i64 {
		idx[i] = int32(v)
	}
	return idx, vals, nil
}
