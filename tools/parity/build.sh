#!/bin/sh
# Builds tools/parity/dump against the llama.cpp build in $LLAMA_BUILD (default /work/llama-build),
# whose vendor/llama.cpp source and build/bin libraries it uses. Output: tools/parity/dump.
set -e
LB=${LLAMA_BUILD:-/work/llama-build}
SRC=$LB/llama_cpp_python-0.3.36/vendor/llama.cpp
cd "$(dirname "$0")"
g++ -O2 -std=c++17 dump.cpp -I"$SRC/include" -I"$SRC/ggml/include" \
    -L"$LB/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$LB/build/bin" -o dump
