package extensions

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// fixtures are the modules the tests use, prepared once by TestMain: the examples that
// `make -C extensions/examples` built (missing ones are a failure, not a skip) and the WAT
// modules compiled by the npm package wabt (tests/node/node_modules, installed by make test).
var fixtures struct {
	examples map[string][]byte // dsv3template, topp, minp, bannedwords
	wat      map[string][]byte // greedy (examples/wat/greedy.wat) and the hostile modules below
	cacheDir string            // the compilation cache shared by the tests' hosts (examples/build/cache)
}

var exampleNames = []string{"dsv3template", "topp", "minp", "bannedwords"}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// make -C extensions/examples precompiles the examples into this cache; without it the
	// tests still pass, compiling them (slowly under -race) into it.
	dir, err := filepath.Abs(filepath.Join("examples", "build", "cache"))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fixtures.cacheDir = dir
	if err := loadFixtures(); err != nil {
		fmt.Fprintln(os.Stderr, "extensions tests: fixtures:", err)
		return 1
	}
	return m.Run()
}

func loadFixtures() error {
	fixtures.examples = map[string][]byte{}
	var missing []string
	for _, name := range exampleNames {
		b, err := os.ReadFile(filepath.Join("examples", "build", name+".wasm"))
		if err != nil {
			missing = append(missing, name)
			continue
		}
		fixtures.examples[name] = b
	}
	if len(missing) > 0 {
		return fmt.Errorf("example modules %v not built: run `make -C extensions/examples` (make test does)", missing)
	}
	srcs := map[string]string{}
	for name, body := range hostileWAT {
		srcs[name] = body
	}
	greedy, err := os.ReadFile(filepath.Join("examples", "wat", "greedy.wat"))
	if err != nil {
		return err
	}
	srcs["greedy"] = string(greedy)
	fixtures.wat, err = compileWAT(srcs)
	return err
}

// wat2wasmJS converts {name: wat} on stdin to {name: base64 wasm | {error}} on stdout with wabt.
const wat2wasmJS = `
const wabt = require('wabt');
let src = '';
process.stdin.on('data', d => src += d);
process.stdin.on('end', async () => {
  const w = await wabt();
  const mods = JSON.parse(src), out = {};
  for (const [name, text] of Object.entries(mods)) {
    try {
      const m = w.parseWat(name + '.wat', text);
      m.resolveNames(); m.validate();
      out[name] = Buffer.from(m.toBinary({}).buffer).toString('base64');
      m.destroy();
    } catch (e) { out[name] = {error: String(e)}; }
  }
  process.stdout.write(JSON.stringify(out));
});`

// compileWAT compiles WebAssembly text with the npm package wabt, run by node from tests/node.
func compileWAT(srcs map[string]string) (map[string][]byte, error) {
	in, err := json.Marshal(srcs)
	if err != nil {
		return nil, err
	}
	nodeDir, err := filepath.Abs(filepath.Join("..", "tests", "node"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "wabt")); err != nil {
		return nil, fmt.Errorf("npm package wabt missing in %s (make test runs npm ci there): %w", nodeDir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "-e", wat2wasmJS)
	cmd.Dir = nodeDir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("node wabt: %v: %s", err, stderr.String())
	}
	var res map[string]json.RawMessage
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("node wabt output: %v", err)
	}
	mods := map[string][]byte{}
	var errs []string
	for name, raw := range res {
		var b64 string
		if err := json.Unmarshal(raw, &b64); err != nil {
			errs = append(errs, name+": "+string(raw))
			continue
		}
		if mods[name], err = base64.StdEncoding.DecodeString(b64); err != nil {
			return nil, err
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("wat2wasm: %s", strings.Join(errs, "; "))
	}
	return mods, nil
}

// newHost opens a Host on a fresh Dir with the shared compilation cache and, unless opt says
// otherwise, a 5 s call deadline; closed by t.Cleanup.
func newHost(t testing.TB, opt Options) *Host {
	t.Helper()
	if opt.Dir == "" {
		opt.Dir = t.TempDir()
	}
	if opt.CacheDir == "" {
		opt.CacheDir = fixtures.cacheDir
	}
	if opt.CallTimeout == 0 { // generous: the test machine is shared and -race is slow
		opt.CallTimeout = 5 * time.Second
	}
	h, err := Open(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return h
}

func mustAdd(t testing.TB, h *Host, name, kind string, bin []byte) Info {
	t.Helper()
	info, err := h.Add(context.Background(), name, kind, bin)
	if err != nil {
		t.Fatalf("Add(%s): %v", name, err)
	}
	return info
}

// prelude is the common part of the hand-written test samplers: memory, ABI version 1 and an
// allocator that hands out a fixed region at 1024.
const prelude = `
  (memory (export "memory") 1)
  (func (export "dsgate_abi_version") (result i32) i32.const 1)
  (func (export "dsgate_alloc") (param i32) (result i32) i32.const 1024)`

// firstID loads the first candidate's id of the step input at $ptr.
const firstID = `(i32.load (i32.add (i32.add (local.get $ptr) (i32.const 24)) (i32.shl (i32.load offset=4 (local.get $ptr)) (i32.const 2))))`

// hostileWAT are modules that misbehave, one way each, plus small helpers for other tests.
var hostileWAT = map[string]string{
	// Runtime misbehaviour: each must fail only its own call, with ErrFailed.
	"loop": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (loop $forever (br $forever)) i32.const 0))`,
	"grow": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (loop $more
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (br $more))
    i32.const 0))`,
	"trap": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (i32.div_u (i32.const 1) (i32.const 0))))`,
	"outside": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    i32.const 999999))`,
	"errcode": `(module ` + prelude + `
  (data (i32.const 16) "no good candidate")
  (func (export "dsgate_error") (result i64) (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 17)))
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    i32.const -7))`,
	"bigout": `(module
  (memory (export "memory") 1)
  (func (export "dsgate_abi_version") (result i32) i32.const 1)
  (func (export "dsgate_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "dsgate_template_render") (param $ptr i32) (param $len i32) (result i64)
    ;; claims 2 MiB of output at address 0 (more than the limit, and more than its memory)
    (i64.const 0x200000)))`,
	"badalloc": `(module
  (memory (export "memory") 1)
  (func (export "dsgate_abi_version") (result i32) i32.const 1)
  (func (export "dsgate_alloc") (param i32) (result i32) i32.const 0x7ffffff0)
  (func (export "dsgate_template_render") (param $ptr i32) (param $len i32) (result i64) (i64.const 0)))`,
	"tmplloop": `(module
  (memory (export "memory") 1)
  (func (export "dsgate_abi_version") (result i32) i32.const 1)
  (func (export "dsgate_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "dsgate_template_render") (param $ptr i32) (param $len i32) (result i64)
    (loop $forever (br $forever)) (i64.const 0)))`,
	// Upload-time problems: each must be refused with ErrInvalidModule.
	"badabi": `(module
  (memory (export "memory") 1)
  (func (export "dsgate_abi_version") (result i32) i32.const 2)
  (func (export "dsgate_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "dsgate_sampler_next") (param i32 i32) (result i32) i32.const 0))`,
	"noexports": `(module ` + prelude + `)`,
	"badsig": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param i32) (result i32) i32.const 0))`,
	"nomemory": `(module
  (func (export "dsgate_abi_version") (result i32) i32.const 1)
  (func (export "dsgate_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "dsgate_sampler_next") (param i32 i32) (result i32) i32.const 0))`,
	"pathopen": `(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  ` + prelude + `
  (func (export "dsgate_sampler_next") (param i32 i32) (result i32) i32.const 0))`,
	"sock": `(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  ` + prelude + `
  (func (export "dsgate_sampler_next") (param i32 i32) (result i32) i32.const 0))`,
	"envimport": `(module
  (import "env" "host_exec" (func $exec (param i32) (result i32)))
  ` + prelude + `
  (func (export "dsgate_sampler_next") (param i32 i32) (result i32) i32.const 0))`,
	"startloop": `(module ` + prelude + `
  (func $start (loop $forever (br $forever)))
  (start $start)
  (func (export "dsgate_sampler_next") (param i32 i32) (result i32) i32.const 0))`,
	"hugememory": `(module
  (memory (export "memory") 60000)
  (func (export "dsgate_abi_version") (result i32) i32.const 1)
  (func (export "dsgate_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "dsgate_sampler_next") (param i32 i32) (result i32) i32.const 0))`,
	// counter is stateful: init stores the first byte of sampler_args as a tag; next returns
	// the candidate at index (calls so far), and traps if the tag changed — so state carried
	// over from another request (or tenant) would show.
	"counter": `(module ` + prelude + `
  (global $calls (mut i32) (i32.const 0))
  (global $tag (mut i32) (i32.const 0))
  (func (export "dsgate_sampler_init") (param $p i32) (param $n i32) (param $seed i64) (result i32)
    (if (i32.ne (global.get $tag) (i32.const 0)) (then unreachable))
    (global.set $tag (i32.load8_u (local.get $p)))
    i32.const 0)
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32)
    (local.set $i (global.get $calls))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.load (i32.add (i32.add (i32.add (local.get $ptr) (i32.const 24))
      (i32.shl (i32.load offset=4 (local.get $ptr)) (i32.const 2)))
      (i32.shl (local.get $i) (i32.const 3))))))`,
	// wasi uses the allowed WASI imports: it fails unless the wall clock is the fixed
	// 2025-01-01T00:00:00Z, and picks candidate (random byte mod n_cands) with random_get.
	"wasi": `(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 0)))
    (if (i64.ne (i64.load (i32.const 0)) (i64.const 1735689600000000000)) (then (return (i32.const -9))))
    (drop (call $random_get (i32.const 8) (i32.const 1)))
    (i32.load (i32.add (i32.add (i32.add (local.get $ptr) (i32.const 24))
      (i32.shl (i32.load offset=4 (local.get $ptr)) (i32.const 2)))
      (i32.shl (i32.rem_u (i32.load8_u (i32.const 8)) (i32.load offset=8 (local.get $ptr))) (i32.const 3))))))`,
	// lastcand returns the last candidate's id; nrecent returns candidate number n_recent.
	"lastcand": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (i32.load (i32.add (i32.add (i32.add (local.get $ptr) (i32.const 24))
      (i32.shl (i32.load offset=4 (local.get $ptr)) (i32.const 2)))
      (i32.shl (i32.sub (i32.load offset=8 (local.get $ptr)) (i32.const 1)) (i32.const 3))))))`,
	"nrecent": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (i32.load (i32.add (i32.add (i32.add (local.get $ptr) (i32.const 24))
      (i32.shl (i32.load offset=4 (local.get $ptr)) (i32.const 2)))
      (i32.shl (i32.load offset=4 (local.get $ptr)) (i32.const 3))))))`,
	"first": `(module ` + prelude + `
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32) ` + firstID + `))`,
}
