#!/usr/bin/env bash
# Side-by-side benchmark: llama.cpp's llama-bench and `kiln bench`, alternating on the same files
# and threads in the same run, then a table of both and their ratio (median over rounds).
#
#   benches/compare.sh [-t THREADS] [-r REPS] [--rounds N] [-p 512] [-n 128] [MODEL.gguf ...]
#
# With no models: SmolLM2-135M Q4_1 (as shipped), Gemma 3 270M Q4_K_M, and SmolLM2 requantized
# by llama-quantize (same build) to F16, Q4_0, Q8_0, Q4_K_M, TQ2_0 and Q2_0.
# llama.cpp is built once from the PyPI sdist of llama-cpp-python==0.3.36 (cmake from PyPI)
# into build-llama.cpp/ (git-ignored, cached). Nothing of llama.cpp is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=2 REPS=5 ROUNDS=3 NP=512 NG=128
MODELS=()
while [ $# -gt 0 ]; do
    case "$1" in
        -t) THREADS=$2; shift 2 ;;
        -r) REPS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        -p) NP=$2; shift 2 ;;
        -n) NG=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) MODELS+=("$1"); shift ;;
    esac
done

LLAMA_VERSION=0.3.36
BUILD=build-llama.cpp
SRC=$BUILD/src/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp
BIN=$BUILD/build/bin
log() { echo "compare: $*" >&2; }

# 1. llama.cpp, from the PyPI sdist (pip only downloads it; scikit-build-core reads its metadata
#    without compiling).
if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-quantize" ]; then
    mkdir -p "$BUILD/src"
    if [ ! -d "$SRC" ]; then
        log "downloading llama-cpp-python==$LLAMA_VERSION (sdist) from PyPI"
        python3 -m pip install -q cmake scikit-build-core
        python3 -m pip download -q --no-deps --no-binary=:all: --no-build-isolation \
            "llama-cpp-python==$LLAMA_VERSION" -d "$BUILD/src"
        tar -xzf "$BUILD/src/llama_cpp_python-$LLAMA_VERSION.tar.gz" -C "$BUILD/src"
    fi
    log "building llama-bench and llama-quantize (native, release); this takes a few minutes"
    python3 -m pip install -q cmake
    cmake -S "$SRC" -B "$BUILD/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >"$BUILD/cmake.log"
    cmake --build "$BUILD/build" -j"$(nproc)" --target llama-bench llama-quantize >"$BUILD/build.log"
fi

# 2. kiln, and the models.
cargo build --release -q
KILN=target/release/kiln
if [ ${#MODELS[@]} -eq 0 ]; then
    mapfile -t base < <(python3 models/fetch.py --all --path)
    smol=${base[0]} gemma=${base[1]}
    MODELS=("$smol" "$gemma")
    for t in F16 Q4_0 Q8_0 Q4_K_M TQ2_0 Q2_0; do
        out=models/SmolLM2-135M-Instruct.$t.requant.gguf
        if [ ! -f "$out" ]; then
            log "requantizing SmolLM2 to $t with llama-quantize"
            "$BIN/llama-quantize" --allow-requantize "$smol" "$out.tmp" "$t" >/dev/null 2>&1
            mv "$out.tmp" "$out"
        fi
        MODELS+=("$out")
    done
fi

# 3. Alternate the two tools, ROUNDS times, collecting avg tokens/s of each test.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$ROUNDS"); do
    for m in "${MODELS[@]}"; do
        log "round $round/$ROUNDS: $(basename "$m")"
        "$BIN/llama-bench" -m "$m" -t "$THREADS" -r "$REPS" -p "$NP" -n "$NG" -o json 2>/dev/null |
            python3 -c 'import json,sys
for t in json.load(sys.stdin): print("llama.cpp", sys.argv[1], t["n_prompt"], t["n_gen"], t["avg_ts"])' "$m" >>"$results"
        "$KILN" bench -m "$m" -t "$THREADS" -r "$REPS" -p "$NP" -n "$NG" -o json |
            python3 -c 'import json,sys
for t in json.load(sys.stdin): print("kiln", sys.argv[1], t["n_prompt"], t["n_gen"], t["avg_ts"])' "$m" >>"$results"
    done
done

# 4. Table: median over rounds, and kiln / llama.cpp.
python3 - "$results" "$THREADS" "$ROUNDS" "$REPS" <<'EOF'
import collections, os, statistics, subprocess, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    tool, model, p, g, ts = line.split()
    rows[(os.path.basename(model), int(p), int(g), tool)].append(float(ts))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"{cpu}, {os.cpu_count()} CPUs, {sys.argv[2]} threads; median of {sys.argv[3]} rounds x {sys.argv[4]} reps; "
      f"{subprocess.run(['date', '-u', '+%Y-%m-%d'], capture_output=True, text=True).stdout.strip()}\n")
print("| model | test | llama.cpp t/s | kiln t/s | kiln / llama.cpp |")
print("| --- | --- | ---: | ---: | ---: |")
for (model, p, g, tool) in sorted(k for k in rows if k[3] == "kiln"):
    k = statistics.median(rows[(model, p, g, "kiln")])
    l = statistics.median(rows.get((model, p, g, "llama.cpp"), [float("nan")]))
    test = f"pp{p}" if p else f"tg{g}"
    print(f"| {model} | {test} | {l:.1f} | {k:.1f} | {k / l:.2f} |")
EOF
