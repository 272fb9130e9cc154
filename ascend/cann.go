//go:build cgo

package ascend

/*
#cgo LDFLAGS: -ldl
#include "cann.h"
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"
)

// symbol is one CANN entry point: its C name, the library that provides it, and its
// index in dsg_api.
type symbol struct {
	name string
	lib  string // "acl", "nnopbase", "opapi", "hccl"
	idx  C.int
}

// symbols lists every CANN function this package calls; all are resolved at start-up.
// Op entries come in pairs: phase 1 (…GetWorkspaceSize) then phase 2.
var symbols = func() []symbol {
	s := []symbol{
		{"aclInit", "acl", C.F_aclInit}, {"aclGetRecentErrMsg", "acl", C.F_aclGetRecentErrMsg},
		{"aclrtGetDeviceCount", "acl", C.F_aclrtGetDeviceCount}, {"aclrtSetDevice", "acl", C.F_aclrtSetDevice},
		{"aclrtCreateStream", "acl", C.F_aclrtCreateStream}, {"aclrtDestroyStream", "acl", C.F_aclrtDestroyStream},
		{"aclrtSynchronizeStream", "acl", C.F_aclrtSynchronizeStream}, {"aclrtMalloc", "acl", C.F_aclrtMalloc},
		{"aclrtFree", "acl", C.F_aclrtFree}, {"aclrtMallocHost", "acl", C.F_aclrtMallocHost}, {"aclrtFreeHost", "acl", C.F_aclrtFreeHost},
		{"aclrtMemcpy", "acl", C.F_aclrtMemcpy}, {"aclrtMemcpyAsync", "acl", C.F_aclrtMemcpyAsync}, {"aclrtMemsetAsync", "acl", C.F_aclrtMemsetAsync},
		{"aclCreateTensor", "nnopbase", C.F_aclCreateTensor}, {"aclDestroyTensor", "nnopbase", C.F_aclDestroyTensor},
		{"aclCreateScalar", "nnopbase", C.F_aclCreateScalar}, {"aclDestroyScalar", "nnopbase", C.F_aclDestroyScalar},
		{"aclCreateIntArray", "nnopbase", C.F_aclCreateIntArray}, {"aclDestroyIntArray", "nnopbase", C.F_aclDestroyIntArray},
		{"aclCreateTensorList", "nnopbase", C.F_aclCreateTensorList}, {"aclDestroyTensorList", "nnopbase", C.F_aclDestroyTensorList},
		{"HcclCommInitAll", "hccl", C.F_HcclCommInitAll}, {"HcclGetRootInfo", "hccl", C.F_HcclGetRootInfo},
		{"HcclCommInitRootInfo", "hccl", C.F_HcclCommInitRootInfo}, {"HcclAllReduce", "hccl", C.F_HcclAllReduce},
		{"HcclAllGather", "hccl", C.F_HcclAllGather}, {"HcclCommDestroy", "hccl", C.F_HcclCommDestroy},
	}
	ops := []struct {
		name string
		idx  C.int
	}{
		{"aclnnEmbedding", C.F_aclnnEmbeddingGWS}, {"aclnnIndexSelect", C.F_aclnnIndexSelectGWS}, {"aclnnRmsNorm", C.F_aclnnRmsNormGWS},
		{"aclnnMatmul", C.F_aclnnMatmulGWS}, {"aclnnBatchMatMul", C.F_aclnnBatchMatMulGWS},
		{"aclnnWeightQuantBatchMatmulV2", C.F_aclnnWeightQuantBatchMatmulV2GWS}, {"aclnnAdd", C.F_aclnnAddGWS}, {"aclnnMuls", C.F_aclnnMulsGWS},
		{"aclnnCast", C.F_aclnnCastGWS}, {"aclnnSoftmax", C.F_aclnnSoftmaxGWS}, {"aclnnRotaryPositionEmbedding", C.F_aclnnRotaryPositionEmbeddingGWS},
		{"aclnnSwiGlu", C.F_aclnnSwiGluGWS}, {"aclnnArgMax", C.F_aclnnArgMaxGWS}, {"aclnnTopk", C.F_aclnnTopkGWS},
		{"aclnnMoeGatingTopK", C.F_aclnnMoeGatingTopKGWS}, {"aclnnMoeTokenUnpermute", C.F_aclnnMoeTokenUnpermuteGWS},
		{"aclnnMoeInitRoutingV3", C.F_aclnnMoeInitRoutingV3GWS}, {"aclnnGroupedMatmulV4", C.F_aclnnGroupedMatmulV4GWS},
		{"aclnnInplaceIndexCopy", C.F_aclnnInplaceIndexCopyGWS},
	}
	for _, o := range ops {
		s = append(s, symbol{o.name + "GetWorkspaceSize", "opapi", o.idx}, symbol{o.name, "opapi", o.idx + 1})
	}
	return s
}()

// api is the resolved CANN entry points (C memory, owned by the process: CANN libraries
// are never unloaded).
type api struct {
	p *C.dsg_api
}

// libFiles returns the library files of a toolkit home for each library role. CANN ≥
// 8.5 splits the op API into libopapi_{math,nn,transformer}.so; older toolkits ship one
// libopapi.so (the two layouts must not be mixed).
func libFiles(home string) map[string][]string {
	dir := filepath.Join(home, "lib64")
	op := []string{filepath.Join(dir, "libopapi.so")}
	if _, err := os.Stat(op[0]); err != nil {
		split := []string{"libopapi_math.so", "libopapi_nn.so", "libopapi_transformer.so"}
		if _, err := os.Stat(filepath.Join(dir, split[0])); err == nil {
			op = op[:0]
			for _, s := range split {
				op = append(op, filepath.Join(dir, s))
			}
		}
	}
	return map[string][]string{
		"acl":      {filepath.Join(dir, "libascendcl.so")},
		"nnopbase": {filepath.Join(dir, "libnnopbase.so")},
		"opapi":    op,
		"hccl":     {filepath.Join(dir, "libhccl.so")},
	}
}

// loadAPI opens the CANN libraries under home and resolves every symbol. On failure the
// error lists every missing library and every missing symbol at once.
func loadAPI(home string) (*api, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("ascend: CANN is only available on Linux (GOOS=%s)", runtime.GOOS)
	}
	files := libFiles(home)
	handles := map[string][]unsafe.Pointer{}
	var missingLibs []string
	errbuf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(errbuf))
	for _, role := range []string{"acl", "nnopbase", "opapi", "hccl"} {
		for _, f := range files[role] {
			cs := C.CString(f)
			h := C.dsg_dlopen(cs, errbuf, 512)
			C.free(unsafe.Pointer(cs))
			if h == nil {
				missingLibs = append(missingLibs, fmt.Sprintf("%s (%s)", f, C.GoString(errbuf)))
				continue
			}
			handles[role] = append(handles[role], h)
		}
	}
	p := (*C.dsg_api)(C.calloc(1, C.size_t(unsafe.Sizeof(C.dsg_api{}))))
	var missingSyms []string
	for _, s := range symbols {
		cs := C.CString(s.name)
		var fn unsafe.Pointer
		for _, h := range handles[s.lib] {
			if fn = C.dsg_dlsym(h, cs); fn != nil {
				break
			}
		}
		C.free(unsafe.Pointer(cs))
		if fn == nil {
			missingSyms = append(missingSyms, s.name)
			continue
		}
		p.fn[s.idx] = fn
	}
	if len(missingLibs) > 0 || len(missingSyms) > 0 {
		C.free(unsafe.Pointer(p))
		return nil, &LoadError{Home: home, MissingLibraries: missingLibs, MissingSymbols: missingSyms}
	}
	return &api{p: p}, nil
}

// LoadError reports every CANN library and symbol that could not be found.
type LoadError struct {
	Home             string
	MissingLibraries []string
	MissingSymbols   []string
}

// Error lists the CANN home, the missing libraries and the missing symbols.
func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ascend: CANN is not usable from %q (set --cann-home or ASCEND_TOOLKIT_HOME to a CANN toolkit, or build the emulator with make cann-emu)", e.Home)
	if len(e.MissingLibraries) > 0 {
		fmt.Fprintf(&b, "; missing libraries: %s", strings.Join(e.MissingLibraries, ", "))
	}
	if len(e.MissingSymbols) > 0 {
		fmt.Fprintf(&b, "; missing symbols (%d): %s", len(e.MissingSymbols), strings.Join(e.MissingSymbols, ", "))
	}
	return b.String()
}

// symbolCount is the number of entry points in dsg_api (checked against symbols in tests).
const symbolCount = int(C.F_COUNT)
