package extensions

import "github.com/tetratelabs/wazero/api"

// ABIVersion is the version of the guest ABI this host implements (ABI.md). A module's
// dsgate_abi_version export must return exactly this value.
const ABIVersion = 1

// Kinds of extension module.
const (
	KindTemplate = "template" // renders the prompt text from the chat messages
	KindSampler  = "sampler"  // chooses each next token among the top-N candidates
)

// Export names of ABI v1 (see ABI.md).
const (
	exportMemory        = "memory"
	exportABIVersion    = "dsgate_abi_version"
	exportAlloc         = "dsgate_alloc"
	exportError         = "dsgate_error"
	exportTemplate      = "dsgate_template_render"
	exportSamplerInit   = "dsgate_sampler_init"
	exportSamplerNext   = "dsgate_sampler_next"
	exportGoInitialize  = "_initialize"
	wasiModuleName      = "wasi_snapshot_preview1"
	samplerHeaderBytes  = 24 // u32 step, u32 n_recent, u32 n_cands, u32 flags, u64 seed
	samplerCandBytes    = 8  // i32 id, f32 logit
	samplerResultStop   = -1 // dsgate_sampler_next: end the sequence
	templateResultError = -1 // dsgate_template_render: failure (message via dsgate_error)
)

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// signature is the parameter and result types of an exported function.
type signature struct {
	params, results []api.ValueType
}

// exportSpec is one function export of the ABI.
type exportSpec struct {
	name     string
	sig      signature
	required bool
}

// abiExports lists, per kind, the function exports the ABI defines. dsgate_error is optional for
// both kinds; dsgate_sampler_init is optional for samplers.
var abiExports = map[string][]exportSpec{
	KindTemplate: {
		{exportABIVersion, signature{nil, []api.ValueType{i32}}, true},
		{exportAlloc, signature{[]api.ValueType{i32}, []api.ValueType{i32}}, true},
		{exportTemplate, signature{[]api.ValueType{i32, i32}, []api.ValueType{i64}}, true},
		{exportError, signature{nil, []api.ValueType{i64}}, false},
	},
	KindSampler: {
		{exportABIVersion, signature{nil, []api.ValueType{i32}}, true},
		{exportAlloc, signature{[]api.ValueType{i32}, []api.ValueType{i32}}, true},
		{exportSamplerNext, signature{[]api.ValueType{i32, i32}, []api.ValueType{i32}}, true},
		{exportSamplerInit, signature{[]api.ValueType{i32, i32, i64}, []api.ValueType{i32}}, false},
		{exportError, signature{nil, []api.ValueType{i64}}, false},
	},
}

// allowedWASI is the subset of wasi_snapshot_preview1 a module may import: what a Go (wasip1)
// or Rust/C (wasm32-wasi) runtime needs to start, print a panic and read a clock or random
// bytes. The host backs them with nothing preopened, no args, no environment, a fixed clock and
// randomness seeded from the request seed. Everything else — path_*, sock_*, fd_readdir,
// fd_filestat_*, ... — is refused at upload.
var allowedWASI = map[string]bool{
	"args_get": true, "args_sizes_get": true,
	"environ_get": true, "environ_sizes_get": true,
	"clock_res_get": true, "clock_time_get": true,
	"fd_close": true, "fd_fdstat_get": true, "fd_fdstat_set_flags": true,
	"fd_prestat_get": true, "fd_prestat_dir_name": true,
	"fd_read": true, "fd_write": true,
	"poll_oneoff": true, "proc_exit": true, "random_get": true, "sched_yield": true,
}
