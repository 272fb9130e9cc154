#!/usr/bin/env bash
# Launcher compatible with the original "DeepSeek-V3 for Ascend" project's scripts/inference.sh:
#
#   scripts/inference.sh --ckpt-path DIR --config-path FILE [--model-name NAME] \
#       --startup-type FILE|interactive|online [--max-batch-size N] [--any-config-field V ...]
#
# --startup-type PATH    runs `gateway batch PATH` (one prompt per line; every line is answered,
#                        where the original dropped lines beyond max_batch_size)
# --startup-type interactive  runs `gateway chat` (/clear or /reset, /system, /exit)
# --startup-type online  runs `gateway serve` on port 5000 with POST /chat, as the original did
#                        (0.0.0.0:5000 when API keys are configured, else 127.0.0.1:5000; --addr
#                        overrides)
# The original's torchrun/NPU environment is not needed: ranks are threads of one process
# (--world-size, default 1; 8 on an 8-NPU node with --backend ascend). Every other flag is
# passed through (config fields such as --max-batch-size, --temperature, --max-new-tokens).
#
# Several nodes, as the original ran on ModelArts: when MA_NUM_HOSTS > 1, every node runs
# this same command; node VC_TASK_INDEX joins the first host of VC_WORKER_HOSTS on port
# MASTER_PORT (default 6000, the original's) with --nnodes/--node-rank/--dist-init-addr,
# --backend ascend and --world-size 8 x nodes (flags given explicitly win). Node 0 runs
# the startup type; the other nodes run `gateway serve` as workers for node 0's steps.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
gateway="${GATEWAY_BIN:-}"
if [ -z "$gateway" ]; then
  if command -v gateway >/dev/null 2>&1; then
    gateway=$(command -v gateway)
  else
    gateway="$here/bin/gateway"
    if [ ! -x "$gateway" ]; then
      (cd "$here" && go build -o bin/gateway ./gateway)
    fi
  fi
fi

startup=""
addr=""
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --startup-type) startup="${2:?--startup-type needs a value}"; shift 2 ;;
    --startup-type=*) startup="${1#*=}"; shift ;;
    --addr) addr="${2:?--addr needs a value}"; shift 2 ;;
    --addr=*) addr="${1#*=}"; shift ;;
    *) pass+=("$1"); shift ;;
  esac
done

has_flag() {
  local f
  for f in "${pass[@]}"; do
    case "$f" in "$1" | "$1="*) return 0 ;; esac
  done
  return 1
}

nnodes="${MA_NUM_HOSTS:-1}"
if [ "$nnodes" -gt 1 ] 2>/dev/null && ! has_flag --nnodes; then
  node_rank="${VC_TASK_INDEX:-0}"
  master="${VC_WORKER_HOSTS:-127.0.0.1}"
  master="${master%%,*}"
  pass+=(--nnodes "$nnodes" --node-rank "$node_rank" --dist-init-addr "$master:${MASTER_PORT:-6000}")
  has_flag --backend || pass+=(--backend ascend)
  has_flag --world-size || pass+=(--world-size "$((8 * nnodes))")
  if [ "$node_rank" != 0 ] && [ -n "$startup" ]; then
    startup=worker
  fi
fi

case "$startup" in
  "")
    echo "inference.sh: --startup-type FILE|interactive|online is required" >&2; exit 2 ;;
  interactive)
    exec "$gateway" chat "${pass[@]}" ;;
  worker)
    exec "$gateway" serve "${pass[@]}" ;;
  online)
    if [ -z "$addr" ]; then
      if [ -n "${GATEWAY_API_KEYS:-}" ]; then addr=0.0.0.0:5000; else addr=127.0.0.1:5000; fi
    fi
    exec "$gateway" serve --addr "$addr" "${pass[@]}" ;;
  *)
    if [ ! -f "$startup" ]; then
      echo "inference.sh: --startup-type $startup is neither interactive, online nor a prompts file" >&2; exit 2
    fi
    exec "$gateway" batch "$startup" "${pass[@]}" ;;
esac
