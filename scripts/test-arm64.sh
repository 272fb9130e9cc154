#!/usr/bin/env bash
# Build the test binaries of the CPU-side packages for linux/arm64 (the Kunpeng hosts
# of Ascend servers) with the cross compiler, and run them under qemu-aarch64. This
# proves the portable build (no x86 kernels, Go's arm64 code generation, which fuses
# multiply-adds) against the same tests. Not covered here: ascend/ and gateway/, whose
# tests load the CANN emulator built for this machine's architecture.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -m)" = aarch64 ]; then
  echo "test-arm64: this machine is arm64; make test's main suite already ran the packages here"
  exit 0
fi

GO=${GO:-go}
CC_ARM64=${CC_ARM64:-aarch64-linux-gnu-gcc}
SYSROOT=${SYSROOT_ARM64:-/usr/aarch64-linux-gnu}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

mod=$($GO list -m)
fail=0
for pkg in $($GO list ./... | grep -v -e "^$mod/ascend" -e "^$mod/gateway"); do
  bin="$out/$(echo "$pkg" | tr / _).test"
  CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC="$CC_ARM64" $GO test -c -o "$bin" "$pkg"
  [ -f "$bin" ] || continue # no test files
  dir=${pkg#"$mod"}
  dir=${dir#/}
  if (cd "${dir:-.}" && qemu-aarch64 -L "$SYSROOT" "$bin" -test.timeout 10m >"$bin.log" 2>&1); then
    echo "ok   arm64 $pkg"
  else
    echo "FAIL arm64 $pkg"
    cat "$bin.log"
    fail=1
  fi
done
exit $fail
