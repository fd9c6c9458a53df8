#!/usr/bin/env python3
"""Compares kiln's KILN_DUMP tensors with llama.cpp's (tools/parity/dump) op by op.

usage: compare.py KILN_DIR LLAMA_DIR [STEP]
Prints, in graph order, each tensor kiln dumped: how many elements differ in bits and the largest
absolute difference; the first line with differing bits is the op to fix next.
"""
import os
import re
import sys

import numpy as np

kdir, ldir = sys.argv[1], sys.argv[2]
step = int(sys.argv[3]) if len(sys.argv) > 3 else 0

# kiln name -> (llama.cpp name, which occurrence in the step: 0 first, -1 last)
ALIASES = {
    "Qcur": ("Qcur", 0), "Kcur": ("Kcur", 0), "Vcur": ("Vcur", 0),
    "Qrope": ("Qcur", -1), "Krope": ("Kcur", -1),
    "Qcur_normed": ("Qcur_normed", 0), "Kcur_normed": ("Kcur_normed", 0),
}

ggml = {}
for f in sorted(os.listdir(ldir)):
    m = re.match(r"(\d+)_(\d+)_(.*)_(\d+)x(\d+)x(\d+)\.f32$", f)
    if not m or int(m.group(1)) != step:
        continue
    ggml.setdefault(m.group(3), []).append(f)

rows = []
for f in os.listdir(kdir):
    m = re.match(r"(.*)-(\d+)\.f32$", f)
    if not m:
        continue
    name, il = m.group(1), int(m.group(2))
    gname, which = ALIASES.get(name, (name, -1))
    cands = ggml.get(f"{gname}-{il}")
    if not cands:
        continue
    gf = cands[which]
    order = int(gf.split("_")[1])
    rows.append((order, name, il, os.path.join(kdir, f), os.path.join(ldir, gf)))

for order, name, il, kf, gf in sorted(rows):
    k = np.fromfile(kf, dtype=np.float32)
    g = np.fromfile(gf, dtype=np.float32)
    if k.size != g.size:
        print(f"{order:5d} {name}-{il}: sizes {k.size} vs {g.size}")
        continue
    nbits = int((k.view(np.uint32) != g.view(np.uint32)).sum())
    diff = np.abs(k.astype(np.float64) - g)
    i = int(diff.argmax())
    print(f"{order:5d} {name:>10}-{il:<2d} bits differ: {nbits:7d}/{k.size:<7d} max |d| {diff[i]:.3g} at {i}")
