// Package ascend is dsgate's Huawei Ascend backend: it implements core/backend with CANN
// aclnn operators and HCCL collectives, loading CANN at run time with dlopen so the
// default build needs no SDK. Its emulator (make cann-emu) is a CPU library with CANN's
// sonames that implements the subset of calls this package makes.
//
// Use NewGroup (or New, a backend.Factory for core/model's Options.Factory) with
// Options.CANNHome set to a CANN toolkit home (DefaultHome reads ASCEND_TOOLKIT_HOME) or
// to ascend/emu/build. Check runs every op against backend.Reference (gateway
// ascend-check). README.md records what was verified, and how: on the emulator, not on
// hardware.
package ascend
