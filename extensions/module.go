package extensions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

var wasmMagic = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// module is one registered, compiled module and its pool of fresh instances.
type module struct {
	info     Info
	compiled wazero.CompiledModule
	hasInit  bool // sampler exports dsgate_sampler_init
	ready    chan *instance
	closed   atomic.Bool
	// life keeps compiled open while an instantiation uses it (read side) and lets
	// close wait for them (write side): see instantiate.
	life sync.RWMutex
	h    *Host
}

// load validates bin for kind, compiles it and proves one instance starts and speaks ABIVersion.
// Errors wrap ErrInvalidModule.
func (h *Host) load(ctx context.Context, name, kind string, bin []byte) (*module, error) {
	if len(bin) < len(wasmMagic) || !bytes.Equal(bin[:4], wasmMagic[:4]) {
		return nil, fmt.Errorf("%w: not a WebAssembly binary (no \\0asm magic)", ErrInvalidModule)
	}
	if !bytes.Equal(bin[4:8], wasmMagic[4:8]) {
		return nil, fmt.Errorf("%w: unsupported WebAssembly binary version %x (want 1)", ErrInvalidModule, bin[4:8])
	}
	// One compilation at a time: wazero v1.12.0 publishes a compiled module (found by
	// its bytes) before its entry preambles are built, so a second module with the same
	// bytes, compiled meanwhile, could be instantiated from a half-built one.
	h.compileMu.Lock()
	compiled, err := h.rt.CompileModule(ctx, bin)
	h.compileMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%w: compile: %v", ErrInvalidModule, err)
	}
	m := &module{compiled: compiled, h: h, ready: make(chan *instance, h.opt.PoolSize)}
	m.info.Name, m.info.Kind = name, kind
	if err := checkShape(compiled, kind); err != nil {
		_ = compiled.Close(ctx)
		return nil, err
	}
	_, m.hasInit = compiled.ExportedFunctions()[exportSamplerInit]
	m.hasInit = m.hasInit && kind == KindSampler

	// A trial instance: its start functions must finish, and it must report our ABI version.
	inst, err := m.instantiate(ctx)
	if err != nil {
		_ = compiled.Close(ctx)
		return nil, fmt.Errorf("%w: %v", ErrInvalidModule, err)
	}
	defer inst.close(ctx)
	stack := []uint64{0}
	if err := inst.call(ctx, h.opt.CallTimeout, inst.abiVersion, stack); err != nil {
		_ = compiled.Close(ctx)
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidModule, exportABIVersion, err)
	}
	if v := int32(uint32(stack[0])); v != ABIVersion {
		_ = compiled.Close(ctx)
		return nil, fmt.Errorf("%w: %s returned ABI version %d, this host speaks version %d", ErrInvalidModule, exportABIVersion, v, ABIVersion)
	}
	return m, nil
}

// checkShape checks imports and exports against ABI v1 for kind.
func checkShape(c wazero.CompiledModule, kind string) error {
	var problems []string
	for _, f := range c.ImportedFunctions() {
		mod, fn, _ := f.Import()
		switch {
		case mod != wasiModuleName:
			problems = append(problems, fmt.Sprintf("import %s.%s is not allowed (only %s functions may be imported)", mod, fn, wasiModuleName))
		case !allowedWASI[fn]:
			problems = append(problems, fmt.Sprintf("import %s.%s is not allowed (no filesystem, network or process access; allowed: %s)", mod, fn, strings.Join(sortedKeys(allowedWASI), ", ")))
		}
	}
	for _, mem := range c.ImportedMemories() {
		mod, n, _ := mem.Import()
		problems = append(problems, fmt.Sprintf("memory import %s.%s is not allowed (the module must define and export its memory)", mod, n))
	}
	if _, ok := c.ExportedMemories()[exportMemory]; !ok {
		problems = append(problems, fmt.Sprintf("missing export %q (linear memory)", exportMemory))
	}
	exports := c.ExportedFunctions()
	for _, spec := range abiExports[kind] {
		def, ok := exports[spec.name]
		if !ok {
			if spec.required {
				problems = append(problems, fmt.Sprintf("missing export %s %s for a %s", spec.name, spec.sig, kind))
			}
			continue
		}
		got := signature{def.ParamTypes(), def.ResultTypes()}
		if !slices.Equal(got.params, spec.sig.params) || !slices.Equal(got.results, spec.sig.results) {
			problems = append(problems, fmt.Sprintf("export %s has type %s, want %s", spec.name, got, spec.sig))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidModule, strings.Join(problems, "; "))
	}
	return nil
}

func (s signature) String() string {
	names := func(ts []api.ValueType) string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = api.ValueTypeName(t)
		}
		return strings.Join(out, ", ")
	}
	return fmt.Sprintf("(%s) -> (%s)", names(s.params), names(s.results))
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// take returns a fresh instance: a pooled one if ready, else a new one. Instances are never
// reused, so no state can pass from one request (or tenant) to the next. The caller asks for a
// refill (h.requestRefill) once its latency-critical work is done, so that the background
// instantiation does not compete with it for the CPU.
func (m *module) take(ctx context.Context) (*instance, error) {
	if m.closed.Load() {
		return nil, fmt.Errorf("%w: %q was deleted", ErrNotFound, m.info.Name)
	}
	select {
	case inst := <-m.ready:
		return inst, nil
	default:
	}
	inst, err := m.instantiate(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrFailed, m.info.Name, err)
	}
	return inst, nil
}

// close releases the compiled module and the pooled instances. Instances already taken keep
// working until their owner closes them.
func (m *module) close(ctx context.Context) {
	m.life.Lock()
	defer m.life.Unlock()
	if m.closed.Swap(true) {
		return
	}
	m.drain(ctx)
	_ = m.compiled.Close(ctx)
}

// drain closes the instances pooled in m.ready and returns once it finds the pool
// empty. It never waits: a take or another drain may empty the pool at the same time.
func (m *module) drain(ctx context.Context) {
	for {
		select {
		case inst := <-m.ready:
			inst.close(ctx)
		default:
			return
		}
	}
}

// requestRefill asks the refill goroutine to top up m's pool; it never blocks.
func (h *Host) requestRefill(m *module) {
	select {
	case h.refill <- m:
	default: // a refill is already queued; the next take asks again
	}
}

// refiller keeps each module's pool full with fresh instances, off the request path.
func (h *Host) refiller() {
	defer h.wg.Done()
	for {
		select {
		case <-h.baseCtx.Done():
			return
		case m := <-h.refill:
			for len(m.ready) < cap(m.ready) && !m.closed.Load() && h.baseCtx.Err() == nil {
				inst, err := m.instantiate(h.baseCtx)
				if err != nil {
					if !errors.Is(err, ErrNotFound) { // not just deleted meanwhile
						h.log.Error("extensions: pre-instantiate failed", "name", m.info.Name, "err", err)
					}
					break
				}
				select {
				case m.ready <- inst:
				default:
					inst.close(h.baseCtx)
				}
			}
			if m.closed.Load() { // deleted meanwhile: drop what we added
				m.close(h.baseCtx)
				m.drain(h.baseCtx)
			}
		}
	}
}

// instance is one instantiated module serving one request. Not safe for concurrent use.
type instance struct {
	mod                              api.Module
	mem                              api.Memory
	rand                             *seededRand
	stderr                           *tailBuffer
	abiVersion, alloc, errFn         api.Function
	render, samplerInit, samplerNext api.Function
	closeOnce                        sync.Once
}

// instantiate creates a fresh instance: nothing preopened, no args or environment, a fixed
// clock, randomness from a seeded source (re-seeded per request), stdout discarded, the tail
// of stderr kept for error messages.
func (m *module) instantiate(ctx context.Context) (*instance, error) {
	// The compiled module must stay open until the instance is built: wazero finds a
	// module's code by its bytes, so an instantiation after Close could read the code of
	// a later module with the same bytes (a data race and a panic under -race, when a
	// module was deleted while the refill goroutine instantiated it).
	m.life.RLock()
	defer m.life.RUnlock()
	if m.closed.Load() {
		return nil, fmt.Errorf("%w: %q was deleted", ErrNotFound, m.info.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, m.h.opt.startTimeout())
	defer cancel()
	inst := &instance{rand: newSeededRand(0), stderr: &tailBuffer{max: 1024}}
	clock := &fakeClock{}
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(exportGoInitialize).
		WithRandSource(inst.rand).
		WithStderr(inst.stderr).
		WithWalltime(clock.walltime, 1).
		WithNanotime(clock.nanotime, 1).
		WithNanosleep(clock.nanosleep)
	mod, err := m.h.rt.InstantiateModule(ctx, m.compiled, cfg)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("start functions did not finish within %v", m.h.opt.startTimeout())
		}
		return nil, fmt.Errorf("instantiate: %v%s", err, inst.stderr.suffix())
	}
	inst.mod = mod
	inst.mem = mod.Memory()
	inst.abiVersion = mod.ExportedFunction(exportABIVersion)
	inst.alloc = mod.ExportedFunction(exportAlloc)
	inst.errFn = mod.ExportedFunction(exportError)
	inst.render = mod.ExportedFunction(exportTemplate)
	inst.samplerInit = mod.ExportedFunction(exportSamplerInit)
	inst.samplerNext = mod.ExportedFunction(exportSamplerNext)
	if inst.mem == nil {
		_ = mod.Close(ctx)
		return nil, fmt.Errorf("module has no memory")
	}
	return inst, nil
}

func (i *instance) close(ctx context.Context) {
	i.closeOnce.Do(func() { _ = i.mod.Close(ctx) })
}

// call runs fn with a per-call deadline; the stack holds parameters in and results out. A
// timed-out or trapped call leaves the instance closed (WithCloseOnContextDone).
func (i *instance) call(ctx context.Context, timeout time.Duration, fn api.Function, stack []uint64) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	err := fn.CallWithStack(ctx, stack)
	cancel()
	if err == nil {
		return nil
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("call exceeded its %v deadline", timeout)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("call cancelled: %w", context.Canceled)
		}
		return fmt.Errorf("module exited with code %d%s", exit.ExitCode(), i.stderr.suffix())
	}
	return fmt.Errorf("%v%s", firstLine(err.Error()), i.stderr.suffix())
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
