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

case "$startup" in
  "")
    echo "inference.sh: --startup-type FILE|interactive|online is required" >&2; exit 2 ;;
  interactive)
    exec "$gateway" chat "${pass[@]}" ;;
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
