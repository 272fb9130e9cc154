//go:build cgo

package ascend

/*
#include "cann.h"
*/
import "C"

import (
	"context"
	"fmt"
	"unsafe"
)

// RootInfoSize is the size of an HCCL root info (HcclRootInfo).
const RootInfoSize = 4108

// NewRootInfo returns a fresh HCCL root info (HcclGetRootInfo) for a group spread over
// several processes or nodes: the process of rank 0 calls it and sends the bytes to every
// other process, which pass them to NewRank. (The emulator's root info is valid only
// inside one process.)
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
