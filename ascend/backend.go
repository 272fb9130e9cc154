//go:build cgo

package ascend

/*
#include "cann.h"
*/
import "C"

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// group is the state shared by the ranks of one tensor-parallel group.
type group struct {
	a     *api
	comms []C.uintptr_t
	// mu guards open.
	mu   sync.Mutex
	open int
}

// Backend is one Ascend rank: it implements backend.Backend by enqueuing aclnn
// operators and HCCL collectives on its NPU's stream from its own OS thread. Methods
// block until the work is queued (and, for ops returning host values, done). A Backend
// is used by one goroutine at a time, like every backend.Backend.
type Backend struct {
	g      *group
	w      *worker
	rank   int
	world  int
	comm   C.uintptr_t
	matDT  int // device dtype of dense matrices: dtBF16 or dtF32
	closed bool
	// hostMoE is Options.HostMoE: LoadExperts declines, so the model keeps the
	// per-expert MoE composition.
	hostMoE bool
	// routedMoE counts RoutedMoE calls (RoutedMoECalls).
	routedMoE atomic.Int64
	// gatherRowIdx is a test seam: RoutedMoE asks MoeInitRoutingV3 for the gather-form
	// row index (rowIdxType 0) that MoeTokenUnpermute does not take.
	gatherRowIdx bool
}

var (
	_ backend.Backend       = (*Backend)(nil)
	_ backend.RoutedExperts = (*Backend)(nil)
)

func newGroup(worldSize int, opt Options) ([]backend.Backend, error) {
	a, err := loadAPI(opt.CANNHome)
	if err != nil {
		return nil, err
	}
	if code := C.dsg_aclInit(a.p); code != 0 && code != 100002 { // ACL_ERROR_REPEAT_INITIALIZE: already initialised in this process
		return nil, a.check("aclInit", code)
	}
	g := &group{a: a, open: worldSize}
	workers := make([]*worker, 0, worldSize)
	fail := func(err error) ([]backend.Backend, error) {
		for _, w := range workers {
			w.close()
		}
		return nil, err
	}
	for _, d := range opt.Devices {
		w, err := startWorker(a, d)
		if err != nil {
			return fail(fmt.Errorf("ascend: device %d: %w", d, err))
		}
		workers = append(workers, w)
	}
	if worldSize > 1 {
		devs := make([]C.int32_t, worldSize)
		for i, d := range opt.Devices {
			devs[i] = C.int32_t(d)
		}
		comms := make([]C.uintptr_t, worldSize)
		err := workers[0].Do(context.Background(), func() error {
			return a.check("HcclCommInitAll", C.dsg_commInitAll(a.p, C.uint32_t(worldSize), &devs[0], &comms[0]))
		})
		if err != nil {
			return fail(err)
		}
		g.comms = comms
	}
	out := make([]backend.Backend, worldSize)
	for r, w := range workers {
		b := &Backend{g: g, w: w, rank: r, world: worldSize, matDT: dtBF16, hostMoE: opt.HostMoE}
		if opt.Precision == "f32" {
			b.matDT = dtF32
		}
		if g.comms != nil {
			b.comm = g.comms[r]
		}
		out[r] = b
	}
	return out, nil
}

// Name returns "ascend".
func (b *Backend) Name() string { return "ascend" }

// Rank returns this rank's index.
func (b *Backend) Rank() int { return b.rank }

// WorldSize returns the group size.
func (b *Backend) WorldSize() int { return b.world }

// Close synchronizes and stops the rank's thread, freeing its stream and workspace; the
// last rank to close destroys the communicators. Safe to call more than once.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	var err error
	if b.comm != 0 {
		err = b.do(func() error { return b.g.a.check("HcclCommDestroy", C.dsg_commDestroy(b.g.a.p, b.comm)) })
	}
	b.closed = true
	b.w.close()
	return err
}

// do runs fn on the rank's thread.
func (b *Backend) do(fn func() error) error {
	if b.closed {
		return errClosed
	}
	return b.w.Do(context.Background(), fn)
}

// ---------------------------------------------------------------- tensors

// Tensor is a float32 matrix in device memory (possibly a view). Its memory is freed
// when the Tensor (and every view of it) is garbage collected.
type Tensor struct {
	b                       *Backend
	buf                     *devBuf
	off, rows, cols, stride int // in elements
}

// Rows returns the number of rows.
func (t *Tensor) Rows() int { return t.rows }

// Cols returns the number of columns.
func (t *Tensor) Cols() int { return t.cols }

func (t *Tensor) contiguous() bool { return t.stride == t.cols || t.rows <= 1 }

// addr returns the device address of element (i, j).
func (t *Tensor) addr(i, j int) C.uintptr_t {
	return t.buf.ptr + C.uintptr_t(4*(t.off+i*t.stride+j))
}

// view describes one aclTensor over device memory (shapes, strides and offset in
// elements, as aclCreateTensor takes them).
type view struct {
	base    C.uintptr_t
	storage int64 // elements addressable from base
	dt      int
	dims    []int64
	strides []int64
	off     int64
}

// mat is the 2-D view of t.
func (t *Tensor) mat() view {
	return view{t.buf.ptr, int64(t.buf.bytes / 4), dtF32, []int64{int64(t.rows), int64(t.cols)}, []int64{int64(t.stride), 1}, int64(t.off)}
}

// v3 is a 3-D view of t's storage with the given dims, strides and extra offset.
func (t *Tensor) v3(d0, d1, d2, s0, s1, s2, off int) view {
	return view{t.buf.ptr, int64(t.buf.bytes / 4), dtF32, []int64{int64(d0), int64(d1), int64(d2)}, []int64{int64(s0), int64(s1), int64(s2)}, int64(t.off + off)}
}

// descs collects the aclTensor / aclScalar / aclIntArray handles of one launch and
// destroys them afterwards (the executor keeps what it needs).
type descs struct {
	a       *api
	tensors []C.uintptr_t
	scalars []C.uintptr_t
	lists   []C.uintptr_t
	err     error
}

func (d *descs) t(v view) C.uintptr_t {
	if d.err != nil {
		return 0
	}
	nd := len(v.dims)
	dims := make([]C.int64_t, nd+1)
	strides := make([]C.int64_t, nd+1)
	for i := range v.dims {
		dims[i], strides[i] = C.int64_t(v.dims[i]), C.int64_t(v.strides[i])
	}
	st := C.int64_t(v.storage)
	h := C.dsg_tensor(d.a.p, &dims[0], C.uint64_t(nd), C.int(v.dt), &strides[0], C.int64_t(v.off), &st, 1, v.base)
	if h == 0 {
		d.err = d.a.check("aclCreateTensor", -1)
		return 0
	}
	d.tensors = append(d.tensors, h)
	return h
}

func (d *descs) scalar(v float32) C.uintptr_t {
	if d.err != nil {
		return 0
	}
	h := C.dsg_scalarF32(d.a.p, C.float(v))
	if h == 0 {
		d.err = d.a.check("aclCreateScalar", -1)
		return 0
	}
	d.scalars = append(d.scalars, h)
	return h
}

func (d *descs) free() {
	for _, h := range d.tensors {
		C.dsg_destroyTensor(d.a.p, h)
	}
	for _, h := range d.scalars {
		C.dsg_destroyScalar(d.a.p, h)
	}
	for _, h := range d.lists {
		C.dsg_destroyTensorList(d.a.p, h)
	}
	d.tensors, d.scalars, d.lists = nil, nil, nil
}

// op runs one aclnn operator on the rank's thread: mk builds the descriptors and calls
// phase 1.
func (b *Backend) op(name string, runIdx C.int, mk func(d *descs, ws *C.uint64_t, ex *C.uintptr_t) C.int) error {
	d := &descs{a: b.g.a}
	defer d.free()
	return b.w.launch(name, runIdx, func(ws *C.uint64_t, ex *C.uintptr_t) C.int {
		code := mk(d, ws, ex)
		if d.err != nil {
			return -1
		}
		return code
	})
}

// tmp allocates a device scratch matrix (rows × cols of dt) freed after the next sync.
func (b *Backend) tmp(rows, cols, dt int) (view, error) {
	es := dtSize(dt)
	p, err := b.w.temp(rows * cols * es)
	if err != nil {
		return view{}, err
	}
	return view{p, int64(rows * cols), dt, []int64{int64(rows), int64(cols)}, []int64{int64(cols), 1}, 0}, nil
}

// uploadTmp copies host data into a device scratch vector of dt.
func (b *Backend) uploadTmp(p unsafe.Pointer, n, dt int) (view, error) {
	v, err := b.tmp(1, n, dt)
	if err != nil {
		return v, err
	}
	v.dims, v.strides = []int64{int64(n)}, []int64{1}
	return v, b.w.upload(v.base, p, n*dtSize(dt))
}

func i64s(xs []int32) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = int64(x)
	}
	return out
}

func dtSize(dt int) int {
	switch dt {
	case dtBF16, dtF16:
		return 2
	case dtI8:
		return 1
	case dtI64:
		return 8
	}
	return 4
}

func asTensor(op string, t backend.Tensor) (*Tensor, error) {
	d, ok := t.(*Tensor)
	if !ok || d == nil {
		return nil, fmt.Errorf("%s: tensor %T is not an ascend tensor", op, t)
	}
	return d, nil
}

func (b *Backend) tensors(op string, ts ...backend.Tensor) ([]*Tensor, error) {
	out := make([]*Tensor, len(ts))
	for i, t := range ts {
		d, err := asTensor(op, t)
		if err != nil {
			return nil, err
		}
		if d.b != b {
			return nil, fmt.Errorf("%s: tensor belongs to another rank", op)
		}
		out[i] = d
	}
	return out, nil
}

// NewTensor allocates a zeroed rows × cols float32 device tensor.
func (b *Backend) NewTensor(rows, cols int) (backend.Tensor, error) {
	if rows < 0 || cols < 0 || (rows > 0 && cols > math.MaxInt32/rows) {
		return nil, fmt.Errorf("ascend: bad tensor shape %d×%d", rows, cols)
	}
	t := &Tensor{b: b, rows: rows, cols: cols, stride: cols}
	err := b.do(func() error {
		buf, err := b.w.newBuf(4 * rows * cols)
		if err != nil {
			return err
		}
		t.buf = buf
		return b.w.memset0(buf.ptr, buf.bytes)
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Slice returns a view of rows [row0, row0+rows) and columns [col0, col0+cols).
func (b *Backend) Slice(t backend.Tensor, row0, rows, col0, cols int) (backend.Tensor, error) {
	d, err := asTensor("slice", t)
	if err != nil {
		return nil, err
	}
	if row0 < 0 || rows < 0 || col0 < 0 || cols < 0 || row0+rows > d.rows || col0+cols > d.cols {
		return nil, fmt.Errorf("slice: [%d:+%d, %d:+%d] out of %d×%d", row0, rows, col0, cols, d.rows, d.cols)
	}
	return &Tensor{b: d.b, buf: d.buf, off: d.off + row0*d.stride + col0, rows: rows, cols: cols, stride: d.stride}, nil
}

// Write copies src (rows × cols, row-major) into t.
func (b *Backend) Write(t backend.Tensor, src []float32) error {
	ts, err := b.tensors("write", t)
	if err != nil {
		return err
	}
	d := ts[0]
	if len(src) != d.rows*d.cols {
		return fmt.Errorf("write: %d values for a %d×%d tensor", len(src), d.rows, d.cols)
	}
	if len(src) == 0 {
		return nil
	}
	return b.do(func() error {
		if d.contiguous() {
			return b.w.upload(d.addr(0, 0), unsafe.Pointer(&src[0]), 4*len(src))
		}
		for i := 0; i < d.rows; i++ {
			if err := b.w.upload(d.addr(i, 0), unsafe.Pointer(&src[i*d.cols]), 4*d.cols); err != nil {
				return err
			}
		}
		return nil
	})
}

// Read synchronizes the rank's stream and copies t into dst.
func (b *Backend) Read(t backend.Tensor, dst []float32) error {
	ts, err := b.tensors("read", t)
	if err != nil {
		return err
	}
	d := ts[0]
	if len(dst) != d.rows*d.cols {
		return fmt.Errorf("read: %d values for a %d×%d tensor", len(dst), d.rows, d.cols)
	}
	if len(dst) == 0 {
		return b.do(b.w.sync)
	}
	return b.do(func() error {
		if d.contiguous() {
			return b.w.download(unsafe.Pointer(&dst[0]), d.addr(0, 0), 4*len(dst))
		}
		span := (d.rows-1)*d.stride + d.cols
		buf := make([]float32, span)
		if err := b.w.download(unsafe.Pointer(&buf[0]), d.addr(0, 0), 4*span); err != nil {
			return err
		}
		for i := 0; i < d.rows; i++ {
			copy(dst[i*d.cols:(i+1)*d.cols], buf[i*d.stride:])
		}
		return nil
	})
}

// Stats returns the rank's CANN call counters (goroutine-safe).
func (b *Backend) Stats() Stats {
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	return b.w.stats
}

// Sync waits until every operator queued on the rank's stream has run.
func (b *Backend) Sync() error { return b.do(b.w.sync) }
