#!/usr/bin/env bash
# Packs what bench/gpu/run.sh needs on a GPU machine that has no node and no
# internet into bench/gpu/payload/ (gitignored; it travels with the working
# tree, at most 64 MiB):
#   node.xz          this machine's node binary, xz-compressed
#   granular.tar.xz  dist/ (built here), package.json, the PyTorch bench
#                    scripts, the node_modules files the bench loads (found by
#                    tracing one run: tfjs, tfjs-backend-webgpu, Dawn's
#                    dawn.node from the `webgpu` package, yaml, zod, ...), and
#                    the Vulkan loader (libvulkan1's libvulkan.so.1) for a
#                    machine without one
#   MANIFEST.txt     what is inside: versions, glibc needed, sizes, sha256
# The trace run is also the smoke test: it trains resnet18 for one step on
# webgpu, so this machine needs a Vulkan driver (Mesa's lavapipe will do: see
# README.md "Checking the GPU path without a GPU").
#
#   bash bench/gpu/pack.sh            # after npm ci
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=bench/gpu/payload
limit=$((64 * 1024 * 1024))

die() { echo "bench/gpu/pack.sh: $*" >&2; exit 1; }
command -v node >/dev/null || die "node not found"
command -v xz >/dev/null || die "xz not found (apt-get install xz-utils)"
[ -d node_modules/webgpu ] || die "node_modules/webgpu is missing: run 'npm ci' first"
arch=$(node -p 'process.platform + "-" + process.arch')
[ "$arch" = linux-x64 ] || die "packs for linux-x64 only (this is $arch)"
dawn=node_modules/webgpu/dist/linux-x64/dawn.node
[ -f "$dawn" ] || die "$dawn is missing"

npm run --silent build

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# Which node_modules files the bench loads: one tiny run (parent and webgpu
# child) with a preload that lists require.cache at exit.
mkdir -p "$stage/trace"
cat > "$stage/trace.cjs" <<'EOF'
process.on('exit', () => {
  require('fs').writeFileSync(`${process.env.GRANULAR_PACK_TRACE}/${process.pid}.txt`, Object.keys(require.cache).join('\n') + '\n');
});
EOF
echo "pack: tracing one webgpu step (resnet18, 16 px, batch 2) to find the files the bench loads..."
if ! GRANULAR_PACK_TRACE="$stage/trace" NODE_OPTIONS="--require $stage/trace.cjs" \
    node dist/bench/gpu/bench.js --archs resnet18 --size 16 --batch 2 --steps 1 --warmup 0 --repeat 1 --no-torch --timeout 600 > "$stage/trace.log" 2>&1 \
  || ! grep -q '^| resnet18 | 16 | 2 | [0-9]' "$stage/trace.log"; then
  cat "$stage/trace.log" >&2
  die "the trace run failed (above): a Vulkan driver is needed here (e.g. Mesa lavapipe, README.md)"
fi

mkdir -p "$stage/tree"
cat "$stage/trace"/*.txt | sed -n "s|^$root/\(node_modules/.*\)|\1|p" | sort -u > "$stage/modules"
grep -q "^$dawn\$" "$stage/modules" || die "the trace run did not load $dawn (trace: $(wc -l < "$stage/modules") node_modules files; log: $(tail -3 "$stage/trace.log"))"
{
  # Every module the run loaded, plus each package's package.json (module resolution reads it).
  cat "$stage/modules"
  sed -E 's|^(node_modules/(@[^/]+/)?[^/]+)/.*|\1/package.json|' "$stage/modules"
  echo "$dawn"
  echo node_modules/webgpu/index.js
  echo package.json
  echo bench/torch_bench.py
  echo bench/gpu/torch_gpu.py
  # All compiled code but the tests (errors paths load modules a good run does not).
  find dist -name '*.js' -not -path 'dist/test/*'
} | sort -u > "$stage/files"
tar -C "$root" -cf "$stage/tree.tar" -T "$stage/files"
tar -C "$stage/tree" -xf "$stage/tree.tar"
# The Vulkan loader, for a machine without one (run.sh prefers the system's).
# (ldconfig's list is read whole first: a reader that stops early would make it die of SIGPIPE under pipefail.)
libs=$(ldconfig -p)
vklib=$(awk '/libvulkan\.so\.1 .*x86-64/ && !found {print $NF; found=1}' <<< "$libs")
[ -n "$vklib" ] || die "libvulkan.so.1 not found here (apt-get install libvulkan1)"
mkdir -p "$stage/tree/lib"
cp "$(readlink -f "$vklib")" "$stage/tree/lib/libvulkan.so.1"
vkver=$(dpkg-query -W -f '${Version}' libvulkan1 2>/dev/null || echo unknown)

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
echo "pack: compressing node ($(du -h "$(readlink -f "$(command -v node)")" | cut -f1)) and the tree ($(du -sh "$stage/tree" | cut -f1))..."
xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > "$out.tmp/node.xz"
tar -C "$stage/tree" -cf - . | xz -T0 -6 -c > "$out.tmp/granular.tar.xz"
glibc() { objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1; }
{
  echo "granular GPU bench payload, packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "node $(node --version) (needs $(glibc "$(readlink -f "$(command -v node)")"))"
  echo "webgpu $(node -p 'require("./node_modules/webgpu/package.json").version') (dawn.node needs $(glibc "$dawn"))"
  echo "tfjs $(node -p 'require("./node_modules/@tensorflow/tfjs-core/package.json").version'), tfjs-backend-webgpu $(node -p 'require("./node_modules/@tensorflow/tfjs-backend-webgpu/package.json").version')"
  echo "libvulkan1 $vkver"
  echo "files in the tree: $(wc -l < "$stage/files") + lib/libvulkan.so.1"
  (cd "$out.tmp" && sha256sum node.xz granular.tar.xz)
} > "$out.tmp/MANIFEST.txt"
total=$(du -cb "$out.tmp"/* | tail -1 | cut -f1)
[ "$total" -le "$limit" ] || die "payload is $((total / 1048576)) MiB, over the 64 MiB a working tree may carry"
rm -rf "$out"
mv "$out.tmp" "$out"
cat "$out/MANIFEST.txt"
echo "pack: $out is $((total / 1048576)) MiB; run it with: bash bench/gpu/run.sh"
