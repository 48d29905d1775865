#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on the stable toolchain (SanitizerCoverage
# through plain rustc flags, no sanitizer) and runs one of them, niced.
#
#   fuzz/run.sh TARGET [SECONDS] [libFuzzer options...]     (TARGET: frame, request, form, objects)
#   fuzz/run.sh build                                       (build all, run none)
#
# The seed corpus is fuzz/seeds/TARGET (in the repo); what the run adds goes to
# $FUZZ_WORK/corpus/TARGET (default /tmp/syncline-fuzz), crashes to $FUZZ_WORK/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
nice -n 19 cargo build --release --target "$host" --bins
target=${1:?usage: run.sh TARGET [SECONDS] [libFuzzer options...] | build}
[ "$target" = build ] && exit 0
seconds=${2:-600}
shift; shift || true
work=${FUZZ_WORK:-/tmp/syncline-fuzz}
mkdir -p "$work/corpus/$target" "$work/artifacts" seeds/"$target"
exec nice -n 19 "$CARGO_TARGET_DIR/$host/release/$target" \
  "$work/corpus/$target" "seeds/$target" \
  -max_total_time="$seconds" -artifact_prefix="$work/artifacts/$target-" \
  -max_len=70000 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
