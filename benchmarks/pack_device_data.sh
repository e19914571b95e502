#!/usr/bin/env bash
# Pack a class-balanced CIFAR-10 subset for benchmarks/device_check.py into the git-ignored
# .carry/ folder, which the GPU machine receives beside the working tree (64 MiB in all;
# ../shared does not travel). The tar holds <class>/<file> for the first PER_CLASS files of
# each class folder in sorted order, so the files after them (numbers PER_CLASS..4999 in
# ../shared/data/cifar10/train) were never seen by a model trained on the subset: they are
# the held-out images to score its snapshots against here. gzip: tar's 512-byte headers and
# padding around each ~1 kB file, and the JPEG headers the files share, compress (30,000
# images: 9.4 MB).
#
#   bash benchmarks/pack_device_data.sh [SOURCE_TRAIN_DIR] [PER_CLASS] [OUT_TAR]
#   defaults: ../shared/data/cifar10/train 3000 .carry/cifar10-30k.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/cifar10/train}
per_class=${2:-3000}
out=${3:-.carry/cifar10-30k.tar.gz}

fail() {
    echo "pack_device_data: error: $*" >&2
    exit 1
}
[[ -d $src ]] || fail "no image folder at $src (expected <class>/*.jpg; see ../shared/data/README.md)"
[[ $per_class =~ ^[1-9][0-9]*$ ]] || fail "PER_CLASS must be a positive integer, got '$per_class'"

list=$(mktemp)
trap 'rm -f "$list"' EXIT
classes=0
for class_dir in "$src"/*/; do
    class=$(basename "$class_dir")
    count=$(find "$class_dir" -maxdepth 1 -type f -name '*.jpg' | wc -l)
    ((count >= per_class)) || fail "$class_dir has $count images, fewer than $per_class"
    # LC_ALL=C: the same byte order as Python's sorted(), which lists the files in training
    find "$class_dir" -maxdepth 1 -type f -name '*.jpg' -printf "$class/%f\n" |
        LC_ALL=C sort | awk -v n="$per_class" 'NR <= n' >>"$list" # reads all: no SIGPIPE
    classes=$((classes + 1))
done
((classes > 0)) || fail "no class folders under $src"

mkdir -p "$(dirname "$out")"
tar -czf "$out.tmp" -C "$src" -T "$list"
mv "$out.tmp" "$out"
echo "packed $(wc -l <"$list") images ($classes classes x $per_class) into $out ($(du -h "$out" | cut -f1))"
