#!/usr/bin/env bash
# Fuzzing (tests/fuzz): builds the libFuzzer targets and the sanitized unit tests with clang
# (AddressSanitizer + UndefinedBehaviorSanitizer), then runs each target for a bounded time.
#
#   scripts/fuzz.sh [-s SECONDS] [-b BUILD_DIR] [-j JOBS] [--build-only] [--no-build] [TARGET...]
#
#   -s SECONDS   time per target (default 60)
#   -b DIR       side build folder (default build/fuzz)
#   -j JOBS      targets run at once (default 1; each uses one core)
#   TARGET       safetensors_header, manifest, ... (default: every tests/fuzz/*_fuzz.cpp)
#
# The committed seeds (tests/fuzz/corpus/TARGET) are only read; new inputs go to DIR/corpus/TARGET
# and crashing inputs to DIR/crashes/TARGET/. Prints executions and corpus size per target.
# Exits 0 when no target crashed, 1 on a crash or build failure, 77 when no clang++ with libFuzzer.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=60
build="$root/build/fuzz"
jobs=1
do_build=1
do_run=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -s) seconds=$2; shift 2 ;;
    -b) build=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    --build-only) do_run=0; shift ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/tests/fuzz/*_fuzz.cpp; do
    n=$(basename "$f" .cpp)
    targets+=("${n%_fuzz}")
  done
fi

find_clang() {
  local c
  for c in ${CXX_FUZZ:-} clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

if [ "$do_build" = 1 ]; then
  if ! cxx=$(find_clang); then
    echo "fuzz.sh: no clang++ found (apt-get install clang libclang-rt-dev); skipping" >&2
    exit 77
  fi
  mkdir -p "$build"
  probe="$build/probe"
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
    > "$probe.cpp"
  if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe.cpp" -o "$probe" >"$probe.log" 2>&1; then
    echo "fuzz.sh: $cxx cannot link libFuzzer with ASan+UBSan (apt-get install libclang-rt-dev); skipping" >&2
    exit 77
  fi
  log="$build/build.log"
  start=$(date +%s)
  if ! { cmake -S "$root/tests/fuzz" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" \
           ${OCR_SHARED_DIR:+-DOCR_SHARED_DIR="$OCR_SHARED_DIR"} &&
         cmake --build "$build" -j "${OCR_FUZZ_BUILD_JOBS:-2}"; } >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz.sh: side build failed; full log in $log" >&2
    exit 1
  fi
  echo "fuzz.sh: built $build in $(( $(date +%s) - start )) s"
  # The tokenizer target reads the real tokenizer.json (committed xz-compressed).
  tok="$build/tokenizer.json"
  if [ ! -s "$tok" ] || [ "$root/models/tokenizer/tokenizer.json.xz" -nt "$tok" ]; then
    xz -dc "$root/models/tokenizer/tokenizer.json.xz" > "$tok.tmp" && mv "$tok.tmp" "$tok"
  fi
fi
[ "$do_run" = 1 ] || exit 0

for t in "${targets[@]}"; do
  if [ ! -x "$build/${t}_fuzz" ]; then
    echo "fuzz.sh: no target $build/${t}_fuzz (build it first, or check the name)" >&2
    exit 1
  fi
done

# Reports from the sanitizers carry symbolised stacks; leaks are findings too.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/tests/fuzz/lsan.supp:print_suppressions=0}"
export OCR_FUZZ_TOKENIZER="$build/tokenizer.json"
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && ! command -v llvm-symbolizer >/dev/null 2>&1; then
  for s in /usr/lib/llvm-*/bin/llvm-symbolizer; do [ -x "$s" ] && export ASAN_SYMBOLIZER_PATH=$s; done
fi

run_one() {
  local t=$1
  local corpus="$build/corpus/$t" crashes="$build/crashes/$t" log="$build/logs/$t.log"
  mkdir -p "$corpus" "$crashes" "$build/logs"
  local seeds=()
  [ -d "$root/tests/fuzz/corpus/$t" ] && seeds=("$root/tests/fuzz/corpus/$t")
  local rc=0
  "$build/${t}_fuzz" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 \
    -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" "${seeds[@]}" >"$log" 2>&1 || rc=$?
  local execs rate files
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  files=$(find "$corpus" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    printf '%-20s %6s s %12s execs %8s exec/s %6s corpus  ok\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "$files"
  else
    printf '%-20s %6s s %12s execs %8s exec/s %6s corpus  CRASH (exit %s)\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "$files" "$rc"
    grep -E "^==[0-9]+==ERROR|runtime error|fuzz check failed|Test unit written|deadly signal|out-of-memory|timeout" "$log" | head -8 | sed 's/^/    /'
    echo "    full log: $log"
  fi
  return "$rc"
}

failed=0
if [ "$jobs" -le 1 ]; then
  for t in "${targets[@]}"; do run_one "$t" || failed=1; done
else
  pids=()
  for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
    run_one "$t" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
fi
exit "$failed"
