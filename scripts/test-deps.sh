#!/usr/bin/env bash
# Install what dsgate's tests need when it is missing: Go modules, redis-server,
# chromium, and on x86-64 the arm64 cross compiler and qemu-user (Debian packages;
# needs root), the npm packages of tests/node (into that folder), and the real
# DeepSeek-V3 tokenizer (scripts/fetch-tokenizer.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

go mod download

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
if [ "$(uname -m)" = x86_64 ]; then # scripts/test-arm64.sh: cross compiler, user-mode qemu
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
  command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "test-deps: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  echo "test-deps: npm ci in tests/node"
  (cd tests/node && npm ci --no-audit --no-fund --silent)
  touch tests/node/node_modules
fi

scripts/fetch-tokenizer.sh >/dev/null
