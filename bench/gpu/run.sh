#!/usr/bin/env bash
# The GPU device check: on a machine with an NVIDIA GPU and its Vulkan driver,
# no node and no internet, unpack bench/gpu/payload/ (made by
# bench/gpu/pack.sh), point the Vulkan loader at the NVIDIA driver and print
# one table: resnet18 and resnet50 at 224 px, batch 64, training img/s and
# peak GPU memory on granular's webgpu backend against PyTorch CUDA (fp32 and
# AMP; where a python imports torch), with the ratios, measured in one run.
# Takes under 8 minutes (--budget, default 420 s of measuring).
#
#   bash bench/gpu/run.sh                   # the full check, NVIDIA driver
#   bash bench/gpu/run.sh --lavapipe --quick   # the same plumbing on Mesa's CPU
#                                           # Vulkan driver (no GPU), tiny sizes
#   bash bench/gpu/run.sh -- --archs resnet18 --steps 5   # bench options (bench/gpu/bench.ts)
#
# Environment: BENCH_GPU_WORK (where to unpack; default a temp folder, removed
# at the end), GRANULAR_BENCH_PYTHON (the python with torch), BENCH_GPU_INDEX
# (the GPU nvidia-smi samples, default 0), VK_ICD_FILENAMES (a Vulkan driver
# json that wins over the search below).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
payload=$here/payload
die() { echo "bench/gpu/run.sh: $*" >&2; exit 1; }

driver=nvidia
quick=()
bench=()
while [ $# -gt 0 ]; do
  case "$1" in
    --lavapipe) driver=lavapipe ;;
    --nvidia) driver=nvidia ;;
    --quick) quick=(--archs resnet18,resnet50 --size 32 --batch 4 --steps 2 --warmup 1 --repeat 1 --timeout 900 --budget 1800) ;;
    --) shift; bench=("$@"); break ;;
    *) die "unknown option $1 (--lavapipe, --nvidia, --quick, -- BENCH OPTIONS)" ;;
  esac
  shift
done

[ -f "$payload/MANIFEST.txt" ] || die "no payload in $payload: run 'bash bench/gpu/pack.sh' (needs node and npm ci) where the tree was built, and bring bench/gpu/payload/ along"
started=$(date +%s)
cat "$payload/MANIFEST.txt"
(cd "$payload" && sha256sum --quiet -c <(grep -E '^[0-9a-f]{64} ' MANIFEST.txt)) || die "the payload does not match its MANIFEST.txt (copied partly?): pack it again"

if [ -n "${BENCH_GPU_WORK:-}" ]; then
  work=$BENCH_GPU_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
xz -dc "$payload/node.xz" > "$work/node"
chmod +x "$work/node"
tar -C "$work" -xJf "$payload/granular.tar.xz"
node=$work/node
"$node" --version > /dev/null || die "the packed node does not run here (glibc too old? MANIFEST.txt says what it needs; here: $(ldd --version 2>&1 | head -1))"

# The Vulkan loader: the system's, else the packed libvulkan1. (ldconfig's
# list is read whole first: a reader that stops early would make it die of
# SIGPIPE under pipefail.)
libs=$({ command -v ldconfig >/dev/null && ldconfig -p; } 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)
first_lib() { awk -v re="$1" '$0 ~ re && !found {print $NF; found=1}' <<< "$libs"; }
if [ -z "$(first_lib 'libvulkan\\.so\\.1 ')" ]; then
  export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "vulkan loader: packed $(grep '^libvulkan1' "$payload/MANIFEST.txt")"
else
  echo "vulkan loader: the system's ($(first_lib 'libvulkan\\.so\\.1 '))"
fi

# The Vulkan driver (ICD json).
find_icd() {
  local name
  for name in "$@"; do
    for d in /etc/vulkan/icd.d /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
      [ -f "$d/$name" ] && { echo "$d/$name"; return 0; }
    done
  done
  return 1
}
if [ -n "${VK_ICD_FILENAMES:-}" ]; then
  icd=$VK_ICD_FILENAMES
elif [ "$driver" = lavapipe ]; then
  icd=$(find_icd lvp_icd.json lvp_icd.x86_64.json) || die "Mesa's lavapipe ICD (lvp_icd*.json) not found: apt-get install -t bookworm-backports mesa-vulkan-drivers (README.md)"
else
  if ! icd=$(find_icd nvidia_icd.json nvidia_icd.x86_64.json); then
    # Containers often carry the driver's library without its json (e.g. the
    # NVIDIA container toolkit without the graphics capability): write one.
    lib=$(first_lib 'libGLX_nvidia\\.so\\.0 ')
    [ -n "$lib" ] || lib=$(first_lib 'libEGL_nvidia\\.so\\.0 ')
    [ -n "$lib" ] || die "no NVIDIA Vulkan driver: neither nvidia_icd.json (/etc/vulkan/icd.d, /usr/share/vulkan/icd.d) nor libGLX_nvidia.so.0 found. In a container, enable the 'graphics' driver capability (NVIDIA_DRIVER_CAPABILITIES=all), or set VK_ICD_FILENAMES"
    icd=$work/nvidia_icd.json
    printf '{ "file_format_version": "1.0.0", "ICD": { "library_path": "%s", "api_version": "1.3.0" } }\n' "$lib" > "$icd"
    echo "vulkan driver: no nvidia_icd.json; wrote $icd for $lib"
  fi
fi
export VK_ICD_FILENAMES=$icd VK_DRIVER_FILES=$icd
echo "vulkan driver: $icd"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'
echo "unpacked in $(($(date +%s) - started)) s into $work"

# The measuring budget: what is left of 7.5 minutes (quick runs on lavapipe get more).
budget=$((450 - ($(date +%s) - started)))
"$node" "$work/dist/bench/gpu/bench.js" --budget "$budget" "${quick[@]}" "${bench[@]}"
echo "bench/gpu/run.sh: done in $(($(date +%s) - started)) s"
