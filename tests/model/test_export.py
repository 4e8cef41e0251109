#!/usr/bin/env python3
"""scripts/export.py: sharded checkpoints, one error listing every bad tensor, impossible configs,
lying safetensors headers."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

SRC = Path(os.environ["OCR_SOURCE_DIR"])
BUILD = Path(os.environ["OCR_BUILD_DIR"])
MODELS = Path(os.environ["OCR_TEST_MODELS"])
PY = sys.executable
EXPORT = SRC / "scripts" / "export.py"
OPS = BUILD / "libocr_ops.so"
HF = MODELS / "tiny-hf"

check = Checks("export")


def export(ckpt, out, *extra):
    return subprocess.run([PY, str(EXPORT), str(ckpt), str(out), "--ops-lib", str(OPS), *extra],
                          capture_output=True, text=True, timeout=600)


def read_st(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data_of):
    """header: name -> (dtype, shape); data_of: name -> bytes."""
    h, off, blobs = {}, 0, []
    for name, (dtype, shape) in header.items():
        b = data_of[name]
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    raw = json.dumps(h).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    header, data = read_st(HF / "model.safetensors")
    tensors = {k: (v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__"}
    blobs = {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}

    def copy_meta(dst):
        dst.mkdir()
        for f in HF.iterdir():
            if f.suffix == ".json":
                shutil.copy(f, dst / f.name)

    # 1. Sharded checkpoint (index + 2 shards) exports to the same module files as the single file.
    sharded = tmp / "sharded"
    copy_meta(sharded)
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        write_st(sharded / shard, {n: tensors[n] for n in part}, blobs)
        weight_map.update({n: shard for n in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    r1 = export(HF, tmp / "out-single", "--dtype", "fp32")
    r2 = export(sharded, tmp / "out-sharded", "--dtype", "fp32")
    check("single export ok", r1.returncode == 0, r1.stderr)
    check("sharded export ok", r2.returncode == 0, r2.stderr)
    if r1.returncode == 0 and r2.returncode == 0:
        m1 = json.loads((tmp / "out-single" / "manifest.json").read_text())
        m2 = json.loads((tmp / "out-sharded" / "manifest.json").read_text())
        check("sharded == single", m1["files"] == m2["files"] and m1["dims"] == m2["dims"], (m1["files"], m2["files"]))
        check("manifest has format version", m1["format_version"] == 1 and m1["dtype"] == "float32")
        check("manifest special tokens", m1["special_tokens"]["image"] == 128815 and m1["special_tokens"]["eos"] == 1)
        check("manifest modes", [m["name"] for m in m1["modes"]] == ["tiny", "small", "base", "large", "gundam"])
    r3 = export(HF, tmp / "out-bf16", "--dtype", "bf16")
    check("bf16 export ok", r3.returncode == 0 and json.loads((tmp / "out-bf16" / "manifest.json").read_text())["dtype"] == "bfloat16", r3.stderr)

    # 2. Missing, unexpected and mis-shaped tensors are all listed in one error.
    bad = tmp / "bad"
    copy_meta(bad)
    t2 = dict(tensors)
    del t2["model.layers.1.mlp.experts.3.down_proj.weight"]
    del t2["model.sam_model.neck.2.weight"]
    t2["model.layers.0.self_attn.q_proj.weight"] = ("BF16", [64, 32])
    b2 = dict(blobs)
    b2["model.layers.0.self_attn.q_proj.weight"] = b2["model.layers.0.self_attn.q_proj.weight"][: 64 * 32 * 2]
    t2["model.extra.weight"] = ("BF16", [4])
    b2["model.extra.weight"] = b"\0" * 8
    write_st(bad / "model.safetensors", t2, b2)
    r = export(bad, tmp / "out-bad")
    err = r.stderr
    check("bad checkpoint exit 1", r.returncode == 1, err)
    for needle in ["missing tensor model.layers.1.mlp.experts.3.down_proj.weight", "missing tensor model.sam_model.neck.2.weight",
                   "unexpected tensor model.extra.weight", "mis-shaped tensor model.layers.0.self_attn.q_proj.weight",
                   "2 missing, 1 unexpected, 1 mis-shaped"]:
        check(f"error lists: {needle}", needle in err, err)
    check("no partial output", not (tmp / "out-bad" / "decoder.pt").exists())

    # 3. A header whose offsets lie about the data.
    lying = tmp / "lying"
    copy_meta(lying)
    raw = (HF / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8:8 + n])
    first = sorted(k for k in h if k != "__metadata__")[0]
    h[first]["data_offsets"][1] += 10 ** 12
    hb = json.dumps(h).encode()
    (lying / "model.safetensors").write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
    r = export(lying, tmp / "out-lying")
    check("lying header rejected", r.returncode == 1 and "data_offsets" in r.stderr and first in r.stderr, r.stderr)
    (lying / "model.safetensors").write_bytes(raw[:4])
    r = export(lying, tmp / "out-lying")
    check("truncated file rejected", r.returncode == 1 and "truncated" in r.stderr, r.stderr)

    # 4. Impossible configs.
    imp = tmp / "impossible"
    shutil.copytree(HF, imp)
    cfg = json.loads((imp / "config.json").read_text())
    cfg["num_attention_heads"] = 5  # 64 is not a multiple of 5
    (imp / "config.json").write_text(json.dumps(cfg))
    r = export(imp, tmp / "out-imp")
    check("heads not dividing hidden rejected", r.returncode == 1 and "num_attention_heads" in r.stderr, r.stderr)
    cfg["num_attention_heads"] = 4
    cfg["use_mla"] = True
    (imp / "config.json").write_text(json.dumps(cfg))
    r = export(imp, tmp / "out-imp")
    check("use_mla rejected", r.returncode == 1 and "use_mla" in r.stderr, r.stderr)
    r = export(tmp / "nowhere", tmp / "out-none")
    check("missing folder rejected", r.returncode == 1 and "config.json" in r.stderr, r.stderr)

check.finish()
