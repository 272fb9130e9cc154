// Package extensions runs user-uploaded WebAssembly modules in wazero: prompt templates
// and sampling policies, sandboxed (no filesystem, network or host access, bounded memory
// and time), plus the on-disk registry of uploaded modules. The ABI is in ABI.md.
//
// # Rationale
//
//   - One wazero.Runtime per Host, configured with a compilation cache (on disk when
//     Options.CacheDir is set, so a restart does not recompile), a memory limit and
//     WithCloseOnContextDone, so every guest call runs under its own context deadline and an
//     infinite loop is cut off at the deadline, closing only its own instance.
//   - Every request gets a fresh instance, never a reused one: Go guests keep state in globals
//     and heap, and resetting a module's memory and globals in place is not something wazero
//     offers. Instantiation (about 25 µs for a small module, a few ms for a Go guest) is taken
//     off the request path by a small pool of pre-instantiated instances per module, refilled
//     by one background goroutine; an instance leaves the pool exactly once.
//   - A pre-instantiated instance has not seen its request yet, so its WASI random source is
//     re-seeded from the request's seed when it is taken; instantiation itself uses seed 0, so
//     every run is reproducible.
//   - Validation happens at upload (imports allow-list, export types, ABI version from a trial
//     instance), so request-time failures are only the module's own runtime behaviour.
//   - Samplers get a compact binary step (24-byte header, recent ids, (id, logit) pairs) written
//     straight into a guest buffer allocated once per sequence; templates get JSON, which every
//     language can parse and whose cost is small next to tokenization.
package extensions
