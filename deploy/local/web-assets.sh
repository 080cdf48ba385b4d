#!/usr/bin/env bash
# The dashboard's third-party JS/CSS (htmx, its SSE extension, uPlot, Swagger UI) from the npm registry:
# `npm pack` of the versions pinned in api/static/vendor.lock, each tarball refused unless its sha512
# equals the lock's integrity, and only the listed dist files copied into api/static/vendor/ (git-ignored;
# the wheel and the image carry them). Nothing is fetched at run time, and npm runs no package scripts.
#
# Usage: web-assets.sh            (idempotent: does nothing when vendor/ already matches the lock)
# Called by the Makefile (`make setup`, so `make test` and `make demo` too) and by deploy/Dockerfile.
# Environment: GUARDIAN_NPM_CACHE (npm's cache, default .stack/cache/npm, kept by `make clean`),
#              GUARDIAN_VENDOR_DIR (default api/static/vendor), GUARDIAN_VENDOR_LOCK (default api/static/vendor.lock).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCK=${GUARDIAN_VENDOR_LOCK:-$ROOT/api/static/vendor.lock}
DEST=${GUARDIAN_VENDOR_DIR:-$ROOT/api/static/vendor}
CACHE=${GUARDIAN_NPM_CACHE:-$ROOT/.stack/cache/npm}
STAMP=$DEST/.lock # a copy of the lock the files came from, written last
RERUN="run bash deploy/local/web-assets.sh (or make setup)"

fail() {
  echo "web-assets: $1" >&2
  echo "web-assets: to fix: ${2:-$RERUN}" >&2
  exit 1
}

[ -f "$LOCK" ] || fail "no lock file at $LOCK" "run git checkout -- api/static/vendor.lock"

# Up to date: the files came from this very lock and none has changed since.
if [ -f "$STAMP" ] && [ -f "$DEST/SHA256SUMS" ] && cmp -s "$LOCK" "$STAMP" \
  && (cd "$DEST" && sha256sum --quiet --strict -c SHA256SUMS) >/dev/null 2>&1; then
  touch "$STAMP" # newer than the lock, so make does not ask again
  exit 0
fi

command -v npm >/dev/null 2>&1 || fail "npm is not installed (it fetches the pinned packages)" \
  "run make system (it installs Debian's npm; or apt-get install npm), then $RERUN"
command -v python3 >/dev/null 2>&1 || fail "python3 is not installed" "run apt-get install python3, then $RERUN"

names=() versions=() integrities=() files=()
while read -r name version integrity rest; do
  case "$name" in '' | '#'*) continue ;; esac
  [[ "$integrity" == sha512-* && -n "$rest" ]] || fail "malformed line in $LOCK for '$name'" "edit $LOCK"
  names+=("$name") versions+=("$version") integrities+=("$integrity") files+=("$rest")
done <"$LOCK"
[ ${#names[@]} -gt 0 ] || fail "$LOCK pins no package" "edit $LOCK"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
specs=()
for i in "${!names[@]}"; do specs+=("${names[$i]}@${versions[$i]}"); done

echo "web-assets: fetching ${specs[*]} with npm pack"
mkdir -p "$CACHE"
if ! (cd "$work" && npm pack --ignore-scripts --silent --cache "$CACHE" --pack-destination "$work" "${specs[@]}") \
  >"$work/npm.log" 2>&1; then
  tail -n 20 "$work/npm.log" >&2
  fail "npm pack failed (above). Is the npm registry reachable? \`npm config get registry\` names the one npm uses"
fi

mkdir -p "$(dirname "$DEST")"
staging=$DEST.tmp.$$
rm -rf "$staging"
mkdir -p "$staging"
trap 'rm -rf "$work" "$staging"' EXIT
for i in "${!names[@]}"; do
  name=${names[$i]} version=${versions[$i]}
  base=${name#@}
  tarball=$work/${base//\//-}-$version.tgz # npm's file name: @scope/pkg -> scope-pkg-VERSION.tgz
  [ -f "$tarball" ] || fail "npm pack made no $(basename "$tarball") for $name@$version (see npm's output above)"
  actual=sha512-$(python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
  if [ "$actual" != "${integrities[$i]}" ]; then
    fail "$name@$version does not match the lock: the tarball is $actual, the lock says ${integrities[$i]}" \
      "if you did not move the pin, do not edit the lock: the registry served different bytes (republished or tampered). To move the pin on purpose, edit api/static/vendor.lock with what \`npm view $name@$version dist.integrity\` prints"
  fi
  unpacked=$work/unpacked/$i
  mkdir -p "$unpacked"
  tar -xzf "$tarball" -C "$unpacked" --no-same-owner --no-same-permissions
  top=("$unpacked"/*) # npm tarballs hold one top folder, normally package/
  [ ${#top[@]} -eq 1 ] && [ -d "${top[0]}" ] || fail "$name@$version: unexpected tarball layout"
  for spec in ${files[$i]}; do
    src=${spec%%=*}
    dst=${spec#*=}
    [ "$spec" = "$src" ] && dst=$(basename "$src")
    [ -f "${top[0]}/$src" ] || fail "$name@$version has no $src (the lock's file list is out of date)" "edit $LOCK"
    mkdir -p "$(dirname "$staging/$dst")"
    cp "${top[0]}/$src" "$staging/$dst"
    chmod 0644 "$staging/$dst"
  done
  echo "web-assets: $name@$version verified (${integrities[$i]:0:20}…)"
done

(cd "$staging" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum >SHA256SUMS)
cp "$LOCK" "$staging/.lock"
rm -rf "$DEST"
mv "$staging" "$DEST"
echo "web-assets: ${DEST#"$ROOT"/}/ ready ($(($(wc -l <"$DEST/SHA256SUMS"))) files)"
