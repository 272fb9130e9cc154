;; greedy.wat — a dsgate sampler written by hand in WebAssembly text format (ABI v1, see
;; ../../ABI.md), to show the ABI needs no SDK: it picks the highest-logit candidate and stops
;; when that is token id 1 (DeepSeek-V3's <｜end▁of▁sentence｜>). No imports, no allocator:
;; dsgate_alloc hands out a fixed region after the 1 KiB data area, and the module is
;; instantiated afresh for every request, so nothing needs to be freed.
(module
  (memory (export "memory") 1)

  ;; ABI version 1.
  (func (export "dsgate_abi_version") (result i32)
    i32.const 1)

  ;; dsgate_alloc(size) -> ptr: the input buffer lives at 1024; grow memory when it must.
  (func (export "dsgate_alloc") (param $size i32) (result i32)
    (local $need i32)
    ;; pages needed = ceil((1024 + size) / 65536)
    (local.set $need
      (i32.shr_u (i32.add (i32.add (local.get $size) (i32.const 1024)) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    i32.const 1024)

  ;; dsgate_sampler_next(ptr, len) -> id | -1 (stop).
  ;; Layout: u32 step, u32 n_recent, u32 n_cands, u32 flags, u64 seed, i32 recent[n_recent],
  ;; then n_cands x (i32 id, f32 logit) sorted by descending logit: the first is the best.
  (func (export "dsgate_sampler_next") (param $ptr i32) (param $len i32) (result i32)
    (local $id i32)
    ;; first candidate at ptr + 24 + 4 * n_recent
    (local.set $id
      (i32.load
        (i32.add
          (i32.add (local.get $ptr) (i32.const 24))
          (i32.shl (i32.load offset=4 (local.get $ptr)) (i32.const 2)))))
    (if (result i32) (i32.eq (local.get $id) (i32.const 1))
      (then (i32.const -1))
      (else (local.get $id))))
)
