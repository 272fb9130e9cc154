#!/usr/bin/env python3
"""Encode speed of HF tokenizers on one thread over the golden corpus (compare with BenchmarkEncode).

Install: python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install tokenizers
Run from the repository root:
    RAYON_NUM_THREADS=1 /tmp/hfenv/bin/python core/tokenizer/testdata/bench_hf.py [--tokenizer DIR] [--runs N]
    go test -run '^$' -bench 'BenchmarkEncode$' -benchtime 5x ./core/tokenizer/
Two sets, as in BenchmarkEncode: "all" (the whole corpus) and "prose-code" (samples cut from real
source files and documentation).
Prints MB/s (wall) and MB/cpu-s (per second of process CPU time, which is what to compare on a
shared machine) (10^6 bytes of UTF-8 per second, like Go's b.SetBytes) for encode_batch over all samples
(one thread: RAYON_NUM_THREADS=1 is forced here before tokenizers is imported) and for a plain
encode() loop; best of --runs, after one warm-up run (so HF's BPE cache is warm, as Go's is).
"""
import argparse
import gzip
import json
import os
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    cache = os.environ.get("DSGATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dsgate")
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(cache, "tokenizer", "deepseek_v3"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    rows = [json.loads(line) for line in gzip.open(os.path.join(HERE, "corpus.jsonl.gz"), "rt", encoding="utf-8")]
    sets = [("all", rows), ("prose-code", [r for r in rows if r["name"].split(":")[0] in ("go", "py", "js", "doc", "json")])]
    for set_name, subset in sets:
        bench(tok, set_name, subset, args.runs)


def bench(tok, set_name, rows, runs):
    texts = [r["text"] for r in rows]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    ntok = sum(len(r["ids"]) for r in rows)

    def run_batch():
        tok.encode_batch(texts, add_special_tokens=False)

    def run_loop():
        for t in texts:
            tok.encode(t, add_special_tokens=False)

    for name, fn in [("encode_batch", run_batch), ("encode loop", run_loop)]:
        fn()
        best, best_cpu = float("inf"), float("inf")
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        print("[%s] HF tokenizers %s, 1 thread: %.2f MB/s, %.0f tok/s, %.2f MB/cpu-s (%d bytes, %d samples)" % (
            set_name, name, nbytes / best / 1e6, ntok / best, nbytes / best_cpu / 1e6, nbytes, len(texts)))


if __name__ == "__main__":
    main()
