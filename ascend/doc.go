// Package ascend is dsgate's Huawei Ascend backend: it implements core/backend with CANN
// aclnn operators and HCCL collectives, loading CANN at run time with dlopen so the
// default build needs no SDK. Its emulator (make cann-emu) is a CPU library with CANN's
// sonames that implements the subset of calls this package makes.
package ascend
