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
	"sync"
	"unsafe"

	"github.com/dsgate/dsgate/core/backend"
)

// RootInfoSize is the size of an HCCL root info (HcclRootInfo).
const RootInfoSize = 4108

// NewRootInfo returns a fresh HCCL root info (HcclGetRootInfo) for a group spread over
// several processes or nodes: the process of rank 0 calls it and sends the bytes to every
// other process, which pass them to NewRank. The emulator's root info names a hub that
// HcclGetRootInfo starts in this process (TCP, host EMU_HCCL_HOST), so this process must
// stay alive while the group runs.
func NewRootInfo(opt Options) ([]byte, error) {
	if err := opt.normalize(1); err != nil {
		return nil, err
	}
	a, err := loadAPI(opt.CANNHome)
	if err != nil {
		return nil, err
	}
	if code := C.dsg_aclInit(a.p); code != 0 && code != 100002 {
		return nil, a.check("aclInit", code)
	}
	buf := (*C.char)(C.calloc(1, RootInfoSize))
	defer C.free(unsafe.Pointer(buf))
	if err := a.check("HcclGetRootInfo", C.dsg_getRootInfo(a.p, buf)); err != nil {
		return nil, err
	}
	return C.GoBytes(unsafe.Pointer(buf), RootInfoSize), nil
}

// NewRank builds one rank of a multi-process group on device opt.Devices[0] (default
// 0): it joins the communicator described by root with HcclCommInitRootInfo, which
// returns once all worldSize ranks have joined.
func NewRank(opt Options, rank, worldSize int, root []byte) (*Backend, error) {
	if len(opt.Devices) == 0 {
		opt.Devices = []int{0}
	}
	if err := opt.normalize(1); err != nil {
		return nil, err
	}
	if rank < 0 || rank >= worldSize || len(root) != RootInfoSize {
		return nil, fmt.Errorf("ascend: rank %d of %d with a %d-byte root info (want %d)", rank, worldSize, len(root), RootInfoSize)
	}
	a, err := loadAPI(opt.CANNHome)
	if err != nil {
		return nil, err
	}
	if code := C.dsg_aclInit(a.p); code != 0 && code != 100002 {
		return nil, a.check("aclInit", code)
	}
	w, err := startWorker(a, opt.Devices[0])
	if err != nil {
		return nil, err
	}
	cr := C.CBytes(root)
	defer C.free(cr)
	var comm C.uintptr_t
	err = w.Do(context.Background(), func() error {
		return a.check("HcclCommInitRootInfo", C.dsg_commInitRootInfo(a.p, C.uint32_t(worldSize), (*C.char)(cr), C.uint32_t(rank), &comm))
	})
	if err != nil {
		w.close()
		return nil, err
	}
	b := &Backend{g: &group{a: a, open: 1}, w: w, rank: rank, world: worldSize, comm: comm, matDT: dtBF16}
	if opt.Precision == "f32" {
		b.matDT = dtF32
	}
	return b, nil
}

// NewNodeRanks builds this node's ranks [base, base+local) of a world of worldSize ranks
// spread over several processes or nodes, all joined by HcclCommInitRootInfo on root
// (from NewRootInfo on node 0). Local rank i runs on NPU opt.Devices[i] (default i). It
// returns once every rank of the world has joined; on failure it closes what it built.
func NewNodeRanks(opt Options, root []byte, worldSize, base, local int) ([]backend.Backend, error) {
	if local < 1 || base < 0 || base+local > worldSize {
		return nil, fmt.Errorf("ascend: local ranks [%d, %d) outside the world of %d", base, base+local, worldSize)
	}
	if len(opt.Devices) == 0 {
		opt.Devices = make([]int, local)
		for i := range opt.Devices {
			opt.Devices[i] = i
		}
	}
	if len(opt.Devices) != local {
		return nil, fmt.Errorf("ascend: %d devices for %d local ranks", len(opt.Devices), local)
	}
	out := make([]*Backend, local)
	errs := make([]error, local)
	var wg sync.WaitGroup
	for i := range local {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opt
			o.Devices = []int{opt.Devices[i]}
			if out[i], errs[i] = NewRank(o, base+i, worldSize, root); errs[i] != nil {
				errs[i] = fmt.Errorf("rank %d (device %d): %w", base+i, opt.Devices[i], errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, b := range out {
			if b != nil {
				_ = b.Close()
			}
		}
		return nil, err
	}
	bs := make([]backend.Backend, local)
	for i, b := range out {
		bs[i] = b
	}
	return bs, nil
}

// NodeFactory is NewNodeRanks as core/model's backend factory for a node of a
// multi-node world (model.Options with RankBase = base and LocalRanks = local): the
// factory is called with the world size and returns the local ranks only.
func NodeFactory(opt Options, root []byte, base, local int) backend.Factory {
	return func(worldSize int) ([]backend.Backend, error) {
		return NewNodeRanks(opt, root, worldSize, base, local)
	}
}
