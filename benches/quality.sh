#!/usr/bin/env bash
# Builds the quality table of docs/QUALITY.md: SmolLM2-135M-Instruct (the HF bf16 folder that
# ../shared/tools/gguf_to_hf.py makes, converted to F16 by kiln) quantized to several types by
# every calibration method, each scored against the F16 reference on WikiText-2 *test*
# (calibration uses the *valid* split only).
#
#   benches/quality.sh [--types "Q4_0 Q4_K_M"] [--methods "rtn gptq"] [--calib-chunks 8]
#                      [--eval-chunks 40] [--eval kiln|llama]
#
# Writes target/quality/table.md (and one FILE.EVAL.kld.txt per file, scored against the
# reference's log-probabilities saved by the same tool, ref.EVAL.kld); the files stay in
# target/quality.
# --eval llama scores with llama.cpp's llama-perplexity (LLAMA_BIN=dir with llama-perplexity,
# default build-llama.cpp/build/bin from benches/compare.sh): same statistics and printout as
# `kiln perplexity --kld` (a cross-check of the two tools).
set -euo pipefail
cd "$(dirname "$0")/.."

TYPES="Q4_0 Q4_K_M Q3_K_M Q2_K TQ2_0"
METHODS="rtn imatrix gptq awq awq+gptq"
CALIB_CHUNKS=8
EVAL_CHUNKS=40
EVAL=kiln
while [ $# -gt 0 ]; do
    case "$1" in
        --types) TYPES="$2"; shift 2 ;;
        --methods) METHODS="$2"; shift 2 ;;
        --calib-chunks) CALIB_CHUNKS="$2"; shift 2 ;;
        --eval-chunks) EVAL_CHUNKS="$2"; shift 2 ;;
        --eval) EVAL="$2"; shift 2 ;;
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
LP=${LLAMA_BIN:-build-llama.cpp/build/bin}/llama-perplexity
TEST="$SHARED/data/wikitext-2-test.txt"
BASE="$OUT/ref.$EVAL.kld"
if [ ! -f "$BASE" ]; then
    case "$EVAL" in
        kiln) "$KILN" perplexity -m "$OUT/ref.F16.gguf" -t "$THREADS" -f "$TEST" -c 512 \
                  --chunks "$EVAL_CHUNKS" --kld-base "$BASE" ;;
        llama) "$LP" -m "$OUT/ref.F16.gguf" -t "$THREADS" -f "$TEST" -c 512 \
                  --chunks "$EVAL_CHUNKS" --kl-divergence-base "$BASE" ;;
    esac
fi
# score one file against the reference (both tools print the same table)
score() {
    case "$EVAL" in
        kiln) "$KILN" perplexity -m "$1" -t "$THREADS" --kld-base "$BASE" --kld ;;
        llama) "$LP" -m "$1" -t "$THREADS" -f "$TEST" -c 512 --chunks "$EVAL_CHUNKS" \
                  --kl-divergence-base "$BASE" --kl-divergence 2>&1 ;;
    esac
}

for ty in $TYPES; do
    for m in $METHODS; do
        f="$OUT/smollm2.$ty.$m.gguf"
        log="$OUT/smollm2.$ty.$m.log"
        [ -f "$f" ] || "$KILN" quantize "$OUT/ref.F16.gguf" "$f" "$ty" --method "$m" -t "$THREADS" \
            -f "$SHARED/data/wikitext-2-valid.txt" --chunks "$CALIB_CHUNKS" 2> "$log"
        [ -s "$f.$EVAL.kld.txt" ] || score "$f" > "$f.$EVAL.kld.txt"
        echo "$ty $m done"
    done
done

python3 - "$OUT" "$TYPES" "$METHODS" "$EVAL" <<'EOF'
import json, os, re, sys
out, types, methods, ev = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
rows = ["| type | method | size MiB | PPL | mean KLD | same top p | calib s | calib peak MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
for ty in types:
    for m in methods:
        f = f"{out}/smollm2.{ty}.{m}.gguf"
        if not os.path.exists(f"{f}.{ev}.kld.txt"):
            continue
        txt = open(f"{f}.{ev}.kld.txt").read()
        ppl = re.search(r"Mean PPL\(Q\)\s*:\s*([\d.]+)\s*±\s*([\d.]+)", txt)
        kld = re.search(r"Mean\s+KLD:\s*([\d.]+)\s*±\s*([\d.]+)", txt)
        top = re.search(r"Same top p:\s*([\d.]+)", txt)
        log = open(f"{out}/smollm2.{ty}.{m}.log").read()
        cal = re.search(r"(?:calibrated|collected) in ([\d.]+) s.*peak memory (\d+) MiB", log)
        secs = cal.group(1) if cal else "–"
        peak = cal.group(2) if cal else "–"
        size = os.path.getsize(f) / 2**20
        rows.append(f"| {ty} | {m} | {size:.1f} | {ppl.group(1)} ± {ppl.group(2)} | "
                    f"{kld.group(1)} ± {kld.group(2)} | {top.group(1)}% | {secs} | {peak} |")
open(f"{out}/table.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
