//go:build wasip1

package sdk

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"unsafe"
)

// guest holds the ABI buffers of this instance.
var guest = struct {
	buffers map[uint32][]byte // blocks handed out by dsgate_alloc, by address (kept alive)
	out     []byte            // the last rendered prompt
	errMsg  []byte            // the last error message (dsgate_error)
	step    Step
	spare   []byte // preallocated first block for dsgate_alloc
}{buffers: map[uint32][]byte{}, spare: make([]byte, 64<<10)}

var (
	errNoHandler  = errors.New("sdk: no handler registered for this kind (call sdk.HandleTemplate or sdk.HandleSampler from init)")
	errBadBlock   = errors.New("sdk: the host passed a block dsgate_alloc did not hand out")
	errNegativeID = errors.New("sdk: the sampler chose a negative id")
	errShortStep  = errors.New("sdk: the step input's length does not match its header")
)

// init warms the decoders up during instantiation (_initialize), which the host does ahead of
// requests: the first decode in a fresh Go instance otherwise costs milliseconds (heap growth,
// encoding/json's reflection caches for sampler_args) on the request path. The warm-up input
// is a constant, so no request's data is involved.
func init() {
	const sample = `{"abi_version":1,"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},` +
		`{"role":"assistant","content":"","tool_calls":[{"id":"i","type":"function","function":{"name":"n","arguments":"{}"}}]},` +
		`{"role":"tool","content":"t","tool_call_id":"i","name":"n"}],"bos_token":"b","eos_token":"e","add_generation_prompt":true}`
	var ti TemplateInput
	_ = DecodeTemplateInput([]byte(sample), &ti)
	var args map[string]any
	_ = json.Unmarshal([]byte(`{"a":[1,2.5,"x",true,null,{"b":[]}]}`), &args)
}

// setError records err for dsgate_error.
func setError(err error) { guest.errMsg = append(guest.errMsg[:0], err.Error()...) }

//go:wasmexport dsgate_abi_version
func abiVersion() int32 { return ABIVersion }

// alloc hands the host a block of n bytes that stays alive for the instance's life. The first
// block that fits comes from a buffer allocated during _initialize (off the request path).
//
//go:wasmexport dsgate_alloc
func alloc(n int32) uint32 {
	if n < 0 {
		return 0
	}
	var b []byte
	if guest.spare != nil && int(n) <= len(guest.spare) {
		b, guest.spare = guest.spare, nil
	} else {
		b = make([]byte, max(n, 1))
	}
	p := uint32(uintptr(unsafe.Pointer(&b[0])))
	guest.buffers[p] = b
	return p
}

// block returns the first n bytes of the block at p that alloc handed out, or nil.
func block(p, n uint32) []byte {
	b, ok := guest.buffers[p]
	if !ok || int(n) > len(b) {
		return nil
	}
	return b[:n]
}

func pack(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	return int64(uint64(uint32(uintptr(unsafe.Pointer(&b[0]))))<<32 | uint64(uint32(len(b))))
}

//go:wasmexport dsgate_error
func lastError() int64 { return pack(guest.errMsg) }

//go:wasmexport dsgate_template_render
func templateRender(p, n uint32) int64 {
	if handlers.template == nil {
		setError(errNoHandler)
		return -1
	}
	in := block(p, n)
	if in == nil {
		setError(errBadBlock)
		return -1
	}
	var ti TemplateInput
	if err := DecodeTemplateInput(in, &ti); err != nil {
		setError(err)
		return -1
	}
	s, err := handlers.template(&ti)
	if err != nil {
		setError(err)
		return -1
	}
	guest.out = append(guest.out[:0], s...)
	return pack(guest.out)
}

//go:wasmexport dsgate_sampler_init
func samplerInit(p, n uint32, seed uint64) int32 {
	if handlers.sampler == nil {
		setError(errNoHandler)
		return -2
	}
	var args []byte
	if n > 0 {
		if args = block(p, n); args == nil {
			setError(errBadBlock)
			return -2
		}
	}
	if err := handlers.sampler.Init(args, seed); err != nil {
		setError(err)
		return -2
	}
	return 0
}

//go:wasmexport dsgate_sampler_next
func samplerNext(p, n uint32) int32 {
	if handlers.sampler == nil {
		setError(errNoHandler)
		return -2
	}
	in := block(p, n)
	if in == nil {
		setError(errBadBlock)
		return -2
	}
	if err := viewStep(in, &guest.step); err != nil {
		setError(err)
		return -2
	}
	id, stop, err := handlers.sampler.Next(&guest.step)
	switch {
	case err != nil:
		setError(err)
		return -2
	case stop:
		return -1
	case id < 0:
		setError(errNegativeID)
		return -2
	}
	return id
}

// viewStep is DecodeStep without copying: on wasm (little-endian, and the block from alloc is
// 8-byte aligned, so every field is 4-byte aligned) the recent ids and the (id, logit) pairs
// already have the memory layout of []int32 and []Candidate, so s aliases b.
func viewStep(b []byte, s *Step) error {
	if len(b) < StepHeaderBytes {
		return errShortStep
	}
	le := binary.LittleEndian
	nRecent, nCands := int(le.Uint32(b[4:])), int(le.Uint32(b[8:]))
	if nRecent < 0 || nCands < 0 || StepHeaderBytes+4*nRecent+CandidateBytes*nCands != len(b) {
		return errShortStep
	}
	s.Step = int(le.Uint32(b[0:]))
	s.Seed = le.Uint64(b[16:])
	s.Recent, s.Cands = nil, nil
	if nRecent > 0 {
		s.Recent = unsafe.Slice((*int32)(unsafe.Pointer(&b[StepHeaderBytes])), nRecent)
	}
	if nCands > 0 {
		s.Cands = unsafe.Slice((*Candidate)(unsafe.Pointer(&b[StepHeaderBytes+4*nRecent])), nCands)
	}
	return nil
}
