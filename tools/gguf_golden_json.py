#!/usr/bin/env python3
"""Describe GGUF files for a golden test: the sha256 of the whole file, every metadata key in
file order (scalars as they are; arrays as their length and the sha256 of their elements' bytes
as GGUF stores them: strings as u64 length + UTF-8, numbers little-endian in the array's type)
and every tensor's name, ggml type, shape (ggml order) and data sha256.

Needs: pip install numpy gguf
Usage: gguf_golden_json.py NAME=FILE.gguf [NAME=FILE.gguf ...] > golden.json
"""
import hashlib, json, struct, sys

import numpy as np
import gguf

NUMPY = {
    gguf.GGUFValueType.UINT8: "<u1", gguf.GGUFValueType.INT8: "<i1",
    gguf.GGUFValueType.UINT16: "<u2", gguf.GGUFValueType.INT16: "<i2",
    gguf.GGUFValueType.UINT32: "<u4", gguf.GGUFValueType.INT32: "<i4",
    gguf.GGUFValueType.UINT64: "<u8", gguf.GGUFValueType.INT64: "<i8",
    gguf.GGUFValueType.FLOAT32: "<f4", gguf.GGUFValueType.FLOAT64: "<f8",
    gguf.GGUFValueType.BOOL: "<u1",
}


def array_bytes(field):
    sub = field.types[1]
    h = hashlib.sha256()
    for i in field.data:
        part = field.parts[i]
        if sub == gguf.GGUFValueType.STRING:
            b = bytes(part)
            h.update(struct.pack("<Q", len(b)) + b)
        else:
            h.update(np.asarray(part, dtype=NUMPY[sub]).tobytes())
    return {"len": len(field.data), "sha256": h.hexdigest()}


def describe(name, path):
    r = gguf.GGUFReader(path)
    md = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            md[k] = array_bytes(f)
        else:
            v = f.contents()
            md[k] = float(v) if isinstance(v, (float, np.floating)) else v
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape],
                "sha256": hashlib.sha256(t.data.tobytes()).hexdigest()} for t in r.tensors]
    with open(path, "rb") as f:
        whole = hashlib.sha256(f.read()).hexdigest()
    return {"file": name, "sha256": whole, "metadata": md, "tensors": tensors}


def main():
    out = []
    for arg in sys.argv[1:]:
        name, _, path = arg.partition("=")
        out.append(describe(name, path))
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
