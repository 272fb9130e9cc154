package extensions

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"

	"github.com/dsgate/dsgate/core/sample"
)

// NewSampler starts a sampler module name for one sequence, in a fresh instance: it seeds the
// instance's randomness with seed, calls dsgate_sampler_init with args (the request's
// sampler_args JSON, may be empty) and returns the Policy the engine calls per token. Close
// the Policy when the sequence ends. Errors wrap ErrNotFound or ErrFailed.
func (h *Host) NewSampler(ctx context.Context, name string, args json.RawMessage, seed uint64) (sample.Policy, error) {
	m, err := h.lookup(name, KindSampler)
	if err != nil {
		return nil, err
	}
	if len(args) > 0 && !json.Valid(args) {
		return nil, fmt.Errorf("%w: sampler %q: sampler_args is not valid JSON", ErrFailed, name)
	}
	inst, err := m.take(ctx)
	if err != nil {
		return nil, err
	}
	defer h.requestRefill(m)
	inst.rand.Seed(seed)
	p := &policy{h: h, name: name, inst: inst, seed: seed, stack: make([]uint64, 3),
		capCands: h.opt.TopN, capRecent: h.opt.MaxRecent}
	if m.hasInit {
		var argPtr uint32
		if len(args) > 0 {
			if argPtr, err = inst.input(ctx, h.opt.CallTimeout, args); err != nil {
				return nil, p.fail(err)
			}
		}
		p.stack[0], p.stack[1], p.stack[2] = uint64(argPtr), uint64(len(args)), seed
		if err := inst.call(ctx, h.opt.CallTimeout, inst.samplerInit, p.stack); err != nil {
			return nil, p.fail(fmt.Errorf("%s: %v", exportSamplerInit, err))
		}
		if rc := int32(uint32(p.stack[0])); rc != 0 {
			return nil, p.fail(fmt.Errorf("%s returned %d%s", exportSamplerInit, rc, inst.guestError(ctx, h.opt.CallTimeout)))
		}
	}
	// One input buffer, sized for the most recent ids and candidates, reused every step.
	p.bufLen = samplerHeaderBytes + 4*p.capRecent + samplerCandBytes*p.capCands
	if p.buf, err = inst.allocate(ctx, h.opt.CallTimeout, p.bufLen); err != nil {
		return nil, p.fail(err)
	}
	return p, nil
}

// policy is a sample.Policy backed by one WASM instance. Not safe for concurrent use (the
// engine calls one sequence's policy from one goroutine at a time).
type policy struct {
	h         *Host
	name      string
	inst      *instance
	seed      uint64
	stack     []uint64
	buf       uint32 // guest address of the input buffer
	bufLen    int
	capCands  int
	capRecent int
	err       error // set after the first failure; every later call returns it
	closed    bool
}

// fail closes the instance and records err (wrapped in ErrFailed) for every later call.
func (p *policy) fail(err error) error {
	p.err = fmt.Errorf("%w: sampler %q: %v", ErrFailed, p.name, err)
	p.inst.close(p.h.baseCtx)
	return p.err
}

// Next implements sample.Policy: it writes the step input (ABI.md, "sampler step input") into
// the guest's buffer and calls dsgate_sampler_next under the per-call deadline.
func (p *policy) Next(ctx context.Context, step int, recent []int32, cands []sample.Candidate) (int32, bool, error) {
	if p.err != nil {
		return 0, false, p.err
	}
	if p.closed {
		return 0, false, fmt.Errorf("%w: sampler %q: policy already closed", ErrFailed, p.name)
	}
	if len(cands) == 0 {
		return 0, false, fmt.Errorf("%w: sampler %q: no candidates", ErrFailed, p.name)
	}
	cands = cands[:min(len(cands), p.capCands)]
	recent = recent[len(recent)-min(len(recent), p.capRecent):]
	n := samplerHeaderBytes + 4*len(recent) + samplerCandBytes*len(cands)
	b, ok := p.inst.mem.Read(p.buf, uint32(n)) // a view of guest memory, valid until it grows
	if !ok {
		return 0, false, p.fail(fmt.Errorf("input buffer at %d is outside its %d-byte memory", p.buf, p.inst.mem.Size()))
	}
	encodeStep(b, step, p.seed, recent, cands)
	p.stack[0], p.stack[1] = uint64(p.buf), uint64(n)
	if err := p.inst.call(ctx, p.h.opt.CallTimeout, p.inst.samplerNext, p.stack); err != nil {
		return 0, false, p.fail(fmt.Errorf("%s: %v", exportSamplerNext, err))
	}
	id := int32(uint32(p.stack[0]))
	switch {
	case id == samplerResultStop:
		return 0, true, nil
	case id < 0:
		return 0, false, p.fail(fmt.Errorf("%s returned error %d%s", exportSamplerNext, id, p.inst.guestError(ctx, p.h.opt.CallTimeout)))
	}
	for _, c := range cands {
		if c.ID == id {
			return id, false, nil
		}
	}
	return 0, false, p.fail(fmt.Errorf("%s returned id %d, which is not among the %d candidates", exportSamplerNext, id, len(cands)))
}

// Close implements sample.Policy: the instance is discarded (never reused). Idempotent.
func (p *policy) Close() error {
	if !p.closed {
		p.closed = true
		p.inst.close(p.h.baseCtx)
	}
	return nil
}

// encodeStep writes one sampler step input in the ABI v1 layout (little-endian):
//
//	[0,4) u32 step  [4,8) u32 n_recent  [8,12) u32 n_cands  [12,16) u32 flags (0)  [16,24) u64 seed
//	then n_recent × i32 recent ids (oldest first), then n_cands × (i32 id, f32 logit).
//
// b must hold exactly samplerHeaderBytes + 4*len(recent) + 8*len(cands) bytes.
func encodeStep(b []byte, step int, seed uint64, recent []int32, cands []sample.Candidate) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(step))
	le.PutUint32(b[4:], uint32(len(recent)))
	le.PutUint32(b[8:], uint32(len(cands)))
	le.PutUint32(b[12:], 0)
	le.PutUint64(b[16:], seed)
	o := samplerHeaderBytes
	for _, id := range recent {
		le.PutUint32(b[o:], uint32(id))
		o += 4
	}
	for _, c := range cands {
		le.PutUint32(b[o:], uint32(c.ID))
		le.PutUint32(b[o+4:], math.Float32bits(c.Logit))
		o += samplerCandBytes
	}
}
