#!/usr/bin/env bash
# Builds the quality table of docs/QUALITY.md: SmolLM2-135M-Instruct (the HF bf16 folder that
# ../shared/tools/gguf_to_hf.py makes, converted to F16 by kiln) quantized to several types by
# every calibration method, each scored against the F16 reference on WikiText-2 *test*
# (calibration uses the *valid* split only).
#
#   benches/quality.sh [--types "Q4_0 Q4_K_M"] [--methods "rtn gptq"] [--calib-chunks 16]
#                      [--eval-chunks 40] [--llama-check]
#
# Writes target/quality/table.md (and one .json per file); the files stay in target/quality.
# --llama-check also scores the calibrated Q4_K_M files with llama.cpp's llama-perplexity
# (built by benches/compare.sh into build-llama.cpp/) to show both tools agree on them.
set -euo pipefail
cd "$(dirname "$0")/.."

TYPES="Q4_0 Q4_K_M Q3_K_M Q2_K TQ2_0"
METHODS="rtn imatrix gptq awq awq+gptq"
CALIB_CHUNKS=16
EVAL_CHUNKS=40
LLAMA_CHECK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --types) TYPES="$2"; shift 2 ;;
        --methods) METHODS="$2"; shift 2 ;;
        --calib-chunks) CALIB_CHUNKS="$2"; shift 2 ;;
        --eval-chunks) EVAL_CHUNKS="$2"; shift 2 ;;
        --llama-check) LLAMA_CHECK=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

SHARED=../shared
OUT=target/quality
KILN=target/release/kiln
THREADS=${THREADS:-2}
mkdir -p "$OUT"
cargo build --release --quiet
SRC=$(python3 models/fetch.py smollm2-135m-instruct-q4_1 --path)

# the reference: HF bf16 folder → F16 GGUF, and its log-probabilities on the test text
if [ ! -f "$OUT/ref.F16.gguf" ]; then
    python3 "$SHARED/tools/gguf_to_hf.py" "$SRC" "$OUT/hf" --dtype bf16
    "$KILN" convert "$OUT/hf" -o "$OUT/ref.F16.gguf" --outtype f16
fi
if [ ! -f "$OUT/ref.kld" ]; then
    "$KILN" perplexity -m "$OUT/ref.F16.gguf" -t "$THREADS" -f "$SHARED/data/wikitext-2-test.txt" \
        -c 512 --chunks "$EVAL_CHUNKS" --kld-base "$OUT/ref.kld"
fi

for ty in $TYPES; do
    for m in $METHODS; do
        f="$OUT/smollm2.$ty.$m.gguf"
        log="$OUT/smollm2.$ty.$m.log"
        if [ ! -f "$f" ]; then
            start=$(date +%s.%N)
            "$KILN" quantize "$OUT/ref.F16.gguf" "$f" "$ty" --method "$m" -t "$THREADS" \
                -f "$SHARED/data/wikitext-2-valid.txt" --chunks "$CALIB_CHUNKS" 2> "$log"
            end=$(date +%s.%N)
            echo "wall $(echo "$end - $start" | bc)" >> "$log"
        fi
        [ -f "$f.json" ] || "$KILN" perplexity -m "$f" -t "$THREADS" --kld-base "$OUT/ref.kld" --kld --json > "$f.json"
        echo "$ty $m done"
    done
done

if [ "$LLAMA_CHECK" = 1 ]; then
    LP=build-llama.cpp/build/bin/llama-perplexity
    [ -x "$LP" ] || { echo "build llama.cpp first: benches/compare.sh --build-only" >&2; exit 1; }
    for m in $METHODS; do
        f="$OUT/smollm2.Q4_K_M.$m.gguf"
        [ -f "$f" ] || continue
        "$LP" -m "$f" -f "$SHARED/data/wikitext-2-test.txt" -c 512 --chunks "$EVAL_CHUNKS" -t "$THREADS" \
            2>&1 | grep -E "Final estimate" | sed "s|^|llama.cpp $m: |" | tee "$f.llama.txt"
    done
fi

python3 - "$OUT" "$TYPES" "$METHODS" <<'EOF'
import json, os, re, sys
out, types, methods = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = ["| type | method | size MiB | PPL | mean KLD | same top p | calib s | calib peak MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
for ty in types:
    for m in methods:
        f = f"{out}/smollm2.{ty}.{m}.gguf"
        if not os.path.exists(f + ".json"):
            continue
        j = json.load(open(f + ".json"))
        log = open(f"{out}/smollm2.{ty}.{m}.log").read()
        cal = re.search(r"calibrated in ([\d.]+) s .* peak memory (\d+) MiB", log)
        wall = re.search(r"wall ([\d.]+)", log)
        secs = cal.group(1) if cal else "–"
        peak = cal.group(2) if cal else "–"
        size = os.path.getsize(f) / 2**20
        rows.append(f"| {ty} | {m} | {size:.1f} | {j['ppl']:.4f} ± {j['ppl_err']:.4f} | "
                    f"{j['kld']:.5f} ± {j['kld_err']:.5f} | {100*j['same_top']:.2f}% | "
                    f"{secs} | {peak} |")
open(f"{out}/table.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
