//go:build cgo

package ascend

/*
#include "cann.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"unsafe"
)

// aclDataType values (acl_base_rt.h).
const (
	dtF32  = 0
	dtF16  = 1
	dtI8   = 2
	dtI32  = 3
	dtI64  = 9
	dtBF16 = 27
	dtI4   = 29
)

// HcclDataType / HcclReduceOp values (hccl_types.h).
const (
	hcclF32 = 4
	hcclSum = 0
)

// aclrtMemcpyKind values.
const (
	memcpyH2D = 1
	memcpyD2H = 2
	memcpyD2D = 3
)

// Error is a failed CANN call: the function, its status code (aclError, aclnnStatus or
// HcclResult) and aclGetRecentErrMsg() at the time of the failure.
type Error struct {
	Op   string
	Code int
	Msg  string
}

// Error names the CANN function, its status and CANN's recent error message.
func (e *Error) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("ascend: %s failed with status %d", e.Op, e.Code)
	}
	return fmt.Sprintf("ascend: %s failed with status %d: %s", e.Op, e.Code, e.Msg)
}

func (a *api) check(op string, code C.int) error {
	if code == 0 {
		return nil
	}
	msg := ""
	if m := C.dsg_errmsg(a.p); m != nil {
		msg = C.GoString(m)
	}
	return &Error{Op: op, Code: int(code), Msg: msg}
}

// job is one unit of work for a rank's OS thread.
type job struct {
	fn   func() error
	done chan error
}

// worker is one rank: a goroutine locked to its OS thread, bound to one device with
// aclrtSetDevice, owning a stream, a grow-only workspace and the device memory it
// allocated. Everything that touches CANN for this rank runs on this thread via Do.
type worker struct {
	a      *api
	device int
	jobs   chan job
	quit   chan struct{}
	exited chan struct{}

	// The fields below are used only on the worker's thread.
	stream   C.uintptr_t
	ws       C.uintptr_t // grow-only workspace
	wsSize   uint64
	deferred []C.uintptr_t // device memory to free after the next synchronize
	hostTmp  []C.uintptr_t // pinned host staging buffers to free after the next synchronize
	pending  bool          // work was enqueued since the last synchronize

	// Test seams (zero in production): for operator hookOp, withhold wsShrink bytes from
	// phase 2's workspace, or call phase 2 a second time on the same executor.
	hookOp   string
	wsShrink uint64
	replay   bool

	// mu guards garbage (device buffers whose Go owners were collected) and stats.
	mu      sync.Mutex
	garbage []C.uintptr_t
	stats   Stats
}

// Stats counts a rank's CANN traffic: operator launches (aclnn phase 2), collectives,
// stream synchronizes and host↔device copies.
type Stats struct {
	Launches, Collectives, Syncs, Uploads, Downloads int64
}

// startWorker starts a rank thread bound to device.
func startWorker(a *api, device int) (*worker, error) {
	w := &worker{a: a, device: device, jobs: make(chan job), quit: make(chan struct{}), exited: make(chan struct{})}
	ready := make(chan error, 1)
	go w.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return w, nil
}

func (w *worker) loop(ready chan<- error) {
	runtime.LockOSThread()
	defer close(w.exited)
	// The thread stays locked (and is discarded by the runtime when the goroutine
	// exits): CANN keeps per-thread device state.
	if err := w.a.check("aclrtSetDevice", C.dsg_setDevice(w.a.p, C.int32_t(w.device))); err != nil {
		ready <- err
		return
	}
	var s C.uintptr_t
	if err := w.a.check("aclrtCreateStream", C.dsg_createStream(w.a.p, &s)); err != nil {
		ready <- err
		return
	}
	w.stream = s
	ready <- nil
	for {
		select {
		case j := <-w.jobs:
			err := w.run(j.fn)
			if !w.pending {
				w.release()
			}
			j.done <- err
		case <-w.quit:
			w.shutdown()
			return
		}
	}
}

// run executes fn, turning a panic into an error.
func (w *worker) run(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("ascend: rank on device %d panicked: %v\n%s", w.device, p, debug.Stack())
		}
	}()
	return fn()
}

// errClosed is returned by Do after Close.
var errClosed = errors.New("ascend: backend is closed")

// Do runs fn on the worker's thread and returns its error (or a recovered panic).
func (w *worker) Do(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	select {
	case w.jobs <- job{fn: fn, done: done}:
	case <-w.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-w.exited:
		return errClosed
	}
}

// close stops the worker after freeing its memory.
func (w *worker) close() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.exited
}

func (w *worker) shutdown() {
	_ = w.sync()
	w.release()
	if w.ws != 0 {
		C.dsg_free(w.a.p, w.ws)
		w.ws = 0
	}
	w.collect()
	C.dsg_destroyStream(w.a.p, w.stream)
}

// --- on-thread helpers (call only inside Do) ---

// sync waits until the stream has run everything queued. Scratch memory of the work it
// ran is released when the current job ends (release), so that a job can still read its
// outputs after synchronizing.
func (w *worker) sync() error {
	err := w.a.check("aclrtSynchronizeStream", C.dsg_sync(w.a.p, w.stream))
	w.pending = false
	w.count(func(s *Stats) { s.Syncs++ })
	return err
}

// release frees deferred device and host memory; call it only when nothing is queued.
func (w *worker) release() {
	for _, p := range w.deferred {
		C.dsg_free(w.a.p, p)
	}
	w.deferred = w.deferred[:0]
	for _, p := range w.hostTmp {
		C.dsg_freeHost(w.a.p, p)
	}
	w.hostTmp = w.hostTmp[:0]
	w.collect()
}

// collect frees device buffers whose Go owners were garbage collected. It runs after a
// synchronize, so no queued work can still use them.
func (w *worker) collect() {
	w.mu.Lock()
	g := w.garbage
	w.garbage = nil
	w.mu.Unlock()
	for _, p := range g {
		C.dsg_free(w.a.p, p)
	}
}

// malloc allocates device memory.
func (w *worker) malloc(n int) (C.uintptr_t, error) {
	if n <= 0 {
		n = 1
	}
	var p C.uintptr_t
	if err := w.a.check("aclrtMalloc", C.dsg_malloc(w.a.p, &p, C.size_t(n))); err != nil {
		return 0, err
	}
	return p, nil
}

// temp allocates device memory that is freed after the next synchronize.
func (w *worker) temp(n int) (C.uintptr_t, error) {
	p, err := w.malloc(n)
	if err == nil {
		w.deferred = append(w.deferred, p)
	}
	return p, err
}

// workspace returns at least n bytes of the rank's grow-only workspace. Work already
// queued may still use the old one, so it is freed only after the next synchronize.
func (w *worker) workspace(n uint64) (C.uintptr_t, error) {
	if n == 0 {
		return 0, nil
	}
	if n <= w.wsSize {
		return w.ws, nil
	}
	size := n + n/4
	p, err := w.malloc(int(size))
	if err != nil {
		return 0, err
	}
	if w.ws != 0 {
		w.deferred = append(w.deferred, w.ws)
	}
	w.ws, w.wsSize = p, size
	return p, nil
}

// upload copies host bytes into device memory at dst, ordered on the stream (through a
// pinned staging buffer that lives until the next synchronize).
func (w *worker) upload(dst C.uintptr_t, src unsafe.Pointer, n int) error {
	if n == 0 {
		return nil
	}
	var h C.uintptr_t
	if err := w.a.check("aclrtMallocHost", C.dsg_mallocHost(w.a.p, &h, C.size_t(n))); err != nil {
		return err
	}
	w.hostTmp = append(w.hostTmp, h)
	w.count(func(s *Stats) { s.Uploads++ })
	C.dsg_host_put(h, src, C.size_t(n))
	w.pending = true
	return w.a.check("aclrtMemcpyAsync", C.dsg_memcpyAsync(w.a.p, dst, C.size_t(n), h, C.size_t(n), memcpyH2D, w.stream))
}

// download synchronizes the stream and copies n device bytes at src into dst.
func (w *worker) download(dst unsafe.Pointer, src C.uintptr_t, n int) error {
	if err := w.sync(); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	var h C.uintptr_t
	if err := w.a.check("aclrtMallocHost", C.dsg_mallocHost(w.a.p, &h, C.size_t(n))); err != nil {
		return err
	}
	defer C.dsg_freeHost(w.a.p, h)
	w.count(func(s *Stats) { s.Downloads++ })
	if err := w.a.check("aclrtMemcpy", C.dsg_memcpy(w.a.p, h, C.size_t(n), src, C.size_t(n), memcpyD2H)); err != nil {
		return err
	}
	C.dsg_host_get(dst, h, C.size_t(n))
	return nil
}

func (w *worker) count(f func(*Stats)) {
	w.mu.Lock()
	f(&w.stats)
	w.mu.Unlock()
}

// peek copies n device bytes at src into dst WITHOUT synchronizing the stream first
// (only tests use it: it shows what a missing synchronize reads).
func (w *worker) peek(dst unsafe.Pointer, src C.uintptr_t, n int) error {
	var h C.uintptr_t
	if err := w.a.check("aclrtMallocHost", C.dsg_mallocHost(w.a.p, &h, C.size_t(n))); err != nil {
		return err
	}
	defer C.dsg_freeHost(w.a.p, h)
	if err := w.a.check("aclrtMemcpy", C.dsg_memcpy(w.a.p, h, C.size_t(n), src, C.size_t(n), memcpyD2H)); err != nil {
		return err
	}
	C.dsg_host_get(dst, h, C.size_t(n))
	return nil
}

// memset0 enqueues zeroing of n device bytes.
func (w *worker) memset0(dst C.uintptr_t, n int) error {
	w.pending = true
	return w.a.check("aclrtMemsetAsync", C.dsg_memsetAsync(w.a.p, dst, C.size_t(n), 0, C.size_t(n), w.stream))
}

// launch runs an aclnn operator: phase 1 through p1 (which returns the status and fills
// the workspace size and executor), then phase 2 on the rank's stream with the rank's
// workspace.
func (w *worker) launch(op string, runIdx C.int, p1 func(ws *C.uint64_t, ex *C.uintptr_t) C.int) error {
	var ws C.uint64_t
	var ex C.uintptr_t
	if err := w.a.check(op+"GetWorkspaceSize", p1(&ws, &ex)); err != nil {
		return err
	}
	buf, err := w.workspace(uint64(ws))
	if err != nil {
		return err
	}
	w.pending = true
	w.count(func(s *Stats) { s.Launches++ })
	hooked := op == w.hookOp
	shrink := C.uint64_t(0)
	if hooked {
		shrink = C.uint64_t(min(w.wsShrink, uint64(ws)))
	}
	if err := w.a.check(op, C.dsg_run(w.a.p, runIdx, buf, ws-shrink, ex, w.stream)); err != nil {
		return err
	}
	if hooked && w.replay {
		return w.a.check(op, C.dsg_run(w.a.p, runIdx, buf, ws, ex, w.stream))
	}
	return nil
}

// devBuf is a device allocation owned by a Go value; when the value is collected the
// memory returns to its worker, which frees it after its next synchronize.
type devBuf struct {
	ptr   C.uintptr_t
	bytes int
}

func (w *worker) newBuf(n int) (*devBuf, error) {
	p, err := w.malloc(n)
	if err != nil {
		return nil, err
	}
	b := &devBuf{ptr: p, bytes: n}
	runtime.AddCleanup(b, func(p C.uintptr_t) {
		w.mu.Lock()
		w.garbage = append(w.garbage, p)
		w.mu.Unlock()
	}, p)
	return b, nil
}
