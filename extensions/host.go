package extensions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Defaults applied by Open to zero fields of Options.
const (
	DefaultMaxModuleBytes   = 32 << 20 // 32 MiB
	DefaultMemoryLimitPages = 1024     // 64 MiB of guest memory
	DefaultCallTimeout      = 500 * time.Millisecond
	DefaultTopN             = 64
	DefaultMaxRecent        = 64
	DefaultMaxOutputBytes   = 1 << 20 // 1 MiB of rendered prompt
	DefaultPoolSize         = 2
)

// Options configures a Host. Zero values take the defaults above.
type Options struct {
	// Dir holds the registered modules (<name>.wasm + <name>.json). Empty: in memory only.
	Dir string
	// CacheDir holds wazero's compilation cache, so a restart does not recompile. Empty: an
	// in-memory cache (compiled once per process).
	CacheDir string
	// MaxModuleBytes caps the size of an uploaded module (ErrTooLarge above it).
	MaxModuleBytes int64
	// MemoryLimitPages caps each instance's linear memory, in 64 KiB pages.
	MemoryLimitPages uint32
	// CallTimeout is the deadline of one guest call (one template render, one sampler step).
	CallTimeout time.Duration
	// TopN is the most candidates handed to a sampler per step; the engine's list is cut to it.
	TopN int
	// MaxRecent bounds the recent generated ids handed to a sampler per step (the newest kept).
	MaxRecent int
	// MaxOutputBytes caps a template's rendered prompt (ErrFailed above it).
	MaxOutputBytes int
	// PoolSize is how many fresh, pre-instantiated instances are kept ready per module.
	PoolSize int
	// Logger receives load and pool errors; nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxModuleBytes <= 0 {
		o.MaxModuleBytes = DefaultMaxModuleBytes
	}
	if o.MemoryLimitPages == 0 {
		o.MemoryLimitPages = DefaultMemoryLimitPages
	}
	if o.MemoryLimitPages > 65536 {
		o.MemoryLimitPages = 65536
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.TopN <= 0 {
		o.TopN = DefaultTopN
	}
	if o.MaxRecent <= 0 {
		o.MaxRecent = DefaultMaxRecent
	}
	if o.MaxOutputBytes <= 0 {
		o.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if o.PoolSize <= 0 {
		o.PoolSize = DefaultPoolSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// startTimeout bounds instantiation (the module's start functions, e.g. Go's _initialize).
func (o Options) startTimeout() time.Duration {
	return max(time.Second, 10*o.CallTimeout)
}

// Info describes a registered module.
type Info struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	ABIVersion int       `json:"abi_version"`
	Created    time.Time `json:"created"`
}

// Host compiles, registers and runs extension modules. All methods are safe for concurrent use.
type Host struct {
	opt   Options
	log   *slog.Logger
	rt    wazero.Runtime
	cache wazero.CompilationCache
	store *diskStore

	// baseCtx lives until Close; it bounds background instantiation.
	baseCtx context.Context
	cancel  context.CancelFunc
	refill  chan *module
	wg      sync.WaitGroup // the refill goroutine

	compileMu sync.Mutex // one CompileModule at a time (see load)

	mu      sync.Mutex         // guards the fields below
	mods    map[string]*module // registered modules by name
	pending map[string]bool    // names being added (validation in progress)
	closed  bool
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Open starts a Host and loads the modules registered in opt.Dir. A module on disk that no
// longer loads (corrupt file, checksum mismatch, now-invalid) is logged and skipped.
func Open(ctx context.Context, opt Options) (*Host, error) {
	opt = opt.withDefaults()
	var cache wazero.CompilationCache
	if opt.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(opt.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("extensions: compilation cache %s: %w", opt.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithMemoryLimitPages(opt.MemoryLimitPages).
		WithCloseOnContextDone(true).
		WithDebugInfoEnabled(false)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		_ = cache.Close(ctx)
		return nil, fmt.Errorf("extensions: instantiate WASI: %w", err)
	}
	store, err := openDiskStore(opt.Dir)
	if err != nil {
		_ = rt.Close(ctx)
		_ = cache.Close(ctx)
		return nil, err
	}
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &Host{
		opt: opt, log: opt.Logger, rt: rt, cache: cache, store: store,
		baseCtx: base, cancel: cancel, refill: make(chan *module, 64),
		mods: map[string]*module{}, pending: map[string]bool{},
	}
	h.wg.Add(1)
	go h.refiller()

	infos, err := store.list()
	if err != nil {
		_ = h.Close(ctx)
		return nil, err
	}
	for _, info := range infos {
		bin, err := store.read(info)
		if err == nil {
			var m *module
			m, err = h.load(ctx, info.Name, info.Kind, bin)
			if err == nil {
				m.info = info
				h.mods[info.Name] = m
				h.requestRefill(m)
				continue
			}
		}
		h.log.Error("extensions: skipping a stored module that no longer loads", "name", info.Name, "err", err)
	}
	return h, nil
}

// Add validates, compiles and registers a module, and stores it in Dir. Errors wrap
// ErrInvalidModule, ErrTooLarge or ErrExists.
func (h *Host) Add(ctx context.Context, name, kind string, bin []byte) (Info, error) {
	if !nameRE.MatchString(name) {
		return Info{}, fmt.Errorf("%w: name %q must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalidModule, name)
	}
	if kind != KindTemplate && kind != KindSampler {
		return Info{}, fmt.Errorf("%w: kind %q must be %q or %q", ErrInvalidModule, kind, KindTemplate, KindSampler)
	}
	if int64(len(bin)) > h.opt.MaxModuleBytes {
		return Info{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(bin), h.opt.MaxModuleBytes)
	}
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return Info{}, ErrClosed
	case h.mods[name] != nil || h.pending[name]:
		h.mu.Unlock()
		return Info{}, fmt.Errorf("%w: %q", ErrExists, name)
	}
	h.pending[name] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.pending, name)
		h.mu.Unlock()
	}()

	m, err := h.load(ctx, name, kind, bin)
	if err != nil {
		return Info{}, err
	}
	sum := sha256.Sum256(bin)
	m.info = Info{Name: name, Kind: kind, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(bin)),
		ABIVersion: ABIVersion, Created: time.Now().UTC().Truncate(time.Second)}
	if err := h.store.write(m.info, bin); err != nil {
		m.close(ctx)
		return Info{}, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		m.close(ctx)
		return Info{}, ErrClosed
	}
	h.mods[name] = m
	h.mu.Unlock()
	h.requestRefill(m)
	return m.info, nil
}

// List returns the registered modules sorted by name.
func (h *Host) List() []Info {
	h.mu.Lock()
	out := make([]Info, 0, len(h.mods))
	for _, m := range h.mods {
		out = append(out, m.info)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns the module registered under name.
func (h *Host) Get(name string) (Info, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.mods[name]; m != nil {
		return m.info, true
	}
	return Info{}, false
}

// Delete unregisters a module and removes it from Dir. Samplers already running on it finish
// normally. The error wraps ErrNotFound when there is no such module.
func (h *Host) Delete(name string) error {
	h.mu.Lock()
	m := h.mods[name]
	delete(h.mods, name)
	h.mu.Unlock()
	if m == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	m.close(h.baseCtx)
	return h.store.remove(name)
}

// Close stops background work and releases every module and instance. Policies still open
// fail their next call with ErrFailed.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	mods := h.mods
	h.mods = map[string]*module{}
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	for _, m := range mods {
		m.close(ctx)
	}
	err := h.rt.Close(ctx)
	return errors.Join(err, h.cache.Close(ctx))
}

// lookup returns the registered module name of the given kind.
func (h *Host) lookup(name, kind string) (*module, error) {
	h.mu.Lock()
	m, closed := h.mods[name], h.closed
	h.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case m == nil:
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	case m.info.Kind != kind:
		return nil, fmt.Errorf("%w: %q is a %s, not a %s", ErrNotFound, name, m.info.Kind, kind)
	}
	return m, nil
}

// MaxModuleBytes is the upload size limit in effect (Options.MaxModuleBytes or its default).
func (h *Host) MaxModuleBytes() int64 { return h.opt.MaxModuleBytes }
