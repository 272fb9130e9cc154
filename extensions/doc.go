// Package extensions runs user-uploaded WebAssembly modules in wazero: prompt templates
// and sampling policies, sandboxed (no filesystem, network or host access, bounded memory
// and time), plus the on-disk registry of uploaded modules. The ABI is in ABI.md.
package extensions
