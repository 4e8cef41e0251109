#!/usr/bin/env python3
"""Export an official DeepSeek-OCR Hugging Face checkpoint to an ocr-cli model folder.

    scripts/export.py CHECKPOINT_DIR OUT_DIR [--dtype bf16|fp32] [--ops-lib PATH]

Reads config.json + model.safetensors (single file, or sharded with model.safetensors.index.json)
without the safetensors package, streams tensors from a memory map, validates every name and
shape (one error listing all problems), derives every size from config.json and the tensor shapes,
and writes encoder.pt and decoder.pt (TorchScript), manifest.json and the tokenizer files.
"""
import argparse
import hashlib
import json
import mmap
import os
import resource
import shutil
import struct
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ocr_modules  # noqa: E402

# torch.frombuffer warns about read-only memory maps; we only ever copy out of them.
warnings.filterwarnings("ignore", message="The given buffer is not writable")

FORMAT = "ocr-cli-model"
FORMAT_VERSION = 1

# Architecture constants that the checkpoint files do not carry (spec 2.1, 2.2; LayerNorm eps).
SAM_LAYERNORM_EPS = 1e-6
CLIP_LAYERNORM_EPS = 1e-5

# The official resolution modes (spec 4.2): name, base_size, image_size, crop_mode.
OFFICIAL_MODES = [
    ("tiny", 512, 512, False),
    ("small", 640, 640, False),
    ("base", 1024, 1024, False),
    ("large", 1280, 1280, False),
    ("gundam", 1024, 640, True),
]

ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
             "I64": torch.int64, "I32": torch.int32}


class ExportError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# safetensors, read by hand


class SafetensorsReader:
    """One or more safetensors files, memory-mapped; tensors are materialised one at a time."""

    def __init__(self, checkpoint_dir: Path):
        self.files = {}
        self.index = {}  # tensor name -> (file name, entry)
        index_path = checkpoint_dir / "model.safetensors.index.json"
        if index_path.exists():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            shard_names = sorted(set(weight_map.values()))
        else:
            shard_names = sorted(p.name for p in checkpoint_dir.glob("*.safetensors"))
            if not shard_names:
                raise ExportError(f"{checkpoint_dir}: no model.safetensors or model.safetensors.index.json")
            weight_map = None
        for shard in shard_names:
            path = checkpoint_dir / shard
            if not path.exists():
                raise ExportError(f"{path}: shard listed in the index is missing")
            header, data_start, mm = self._open(path)
            self.files[shard] = (mm, data_start)
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                if weight_map is not None and weight_map.get(name) != shard:
                    raise ExportError(f"{path}: tensor {name} is not mapped to this shard by the index")
                self.index[name] = (shard, entry)
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self.index))
            if missing:
                raise ExportError(f"index lists tensors absent from the shards: {missing[:10]}")

    @staticmethod
    def _open(path: Path):
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ExportError(f"{path}: truncated safetensors file (no header length)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise ExportError(f"{path}: header length {header_len} exceeds the file size {size}")
            try:
                header = json.loads(f.read(header_len))
            except ValueError as e:
                raise ExportError(f"{path}: header is not valid JSON ({e})")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data_start = 8 + header_len
        for name, e in header.items():
            if name == "__metadata__":
                continue
            if e.get("dtype") not in ST_DTYPES:
                raise ExportError(f"{path}: tensor {name} has unsupported dtype {e.get('dtype')}")
            begin, end = e["data_offsets"]
            numel = 1
            for dim in e["shape"]:
                numel *= dim
            need = numel * torch.empty(0, dtype=ST_DTYPES[e["dtype"]]).element_size()
            if not (0 <= begin <= end <= size - data_start) or end - begin != need:
                raise ExportError(f"{path}: tensor {name} has data_offsets {e['data_offsets']} that do not "
                                  f"fit its shape {e['shape']} {e['dtype']} or the file")
        return header, data_start, mm

    def names(self):
        return self.index.keys()

    def shape(self, name):
        return list(self.index[name][1]["shape"])

    def tensor(self, name) -> torch.Tensor:
        """A private copy of one tensor; the mapped pages are released right away, so the peak
        memory of an export stays near the size of the modules being built."""
        shard, e = self.index[name]
        mm, data_start = self.files[shard]
        begin, end = e["data_offsets"]
        dtype = ST_DTYPES[e["dtype"]]
        if end == begin:
            return torch.empty(e["shape"], dtype=dtype)
        buf = memoryview(mm)[data_start + begin:data_start + end]
        t = torch.frombuffer(buf, dtype=dtype).view(e["shape"]).clone()
        del buf
        page = mmap.PAGESIZE
        lo = (data_start + begin) // page * page
        hi = min(len(mm), -(-(data_start + end) // page) * page)
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        return t


# ---------------------------------------------------------------------------------------------
# dimensions


def lm_config(cfg: dict) -> dict:
    """LM fields: top level (what the HF remote code reads), else language_config."""
    lang = cfg.get("language_config", {})

    def get(key, default=None):
        if key in cfg:
            return cfg[key]
        return lang.get(key, default)
    return {k: get(k) for k in [
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "n_routed_experts", "n_shared_experts",
        "num_experts_per_tok", "first_k_dense_replace", "bos_token_id", "eos_token_id", "use_mla",
        "max_position_embeddings", "topk_method", "scoring_func", "moe_layer_freq"]} | {
        # Absent from the official file: DeepSeek-V2 config defaults (spec 1.2).
        "rms_norm_eps": get("rms_norm_eps", 1e-6), "rope_theta": get("rope_theta", 10000.0),
        "rope_scaling": get("rope_scaling", None), "norm_topk_prob": get("norm_topk_prob", False),
        "routed_scaling_factor": get("routed_scaling_factor", 1.0), "hidden_act": get("hidden_act", "silu"),
        "attention_bias": get("attention_bias", False), "tie_word_embeddings": get("tie_word_embeddings", False)}


def count_indexed(names, prefix):
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in names):
        n += 1
    return n


def derive_dims(cfg: dict, reader: SafetensorsReader) -> dict:
    names = set(reader.names())
    problems = []

    def shape(name):
        if name not in names:
            raise ExportError(f"checkpoint lacks {name}; is this a DeepSeek-OCR checkpoint?")
        return reader.shape(name)

    lm = lm_config(cfg)
    for key in ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"]:
        if not isinstance(lm[key], int) or lm[key] <= 0:
            problems.append(f"config.json: {key} must be a positive integer, got {lm[key]!r}")
    if lm["use_mla"]:
        problems.append("config.json: use_mla is true; only the plain-MHA DeepSeek-OCR decoder is supported")
    if lm["num_key_value_heads"] not in (None, lm["num_attention_heads"]):
        problems.append("config.json: num_key_value_heads differs from num_attention_heads (GQA unsupported)")
    if lm["rope_scaling"] is not None:
        problems.append("config.json: rope_scaling is set; DeepSeek-OCR uses none")
    if lm["scoring_func"] not in (None, "softmax") or lm["topk_method"] not in (None, "greedy"):
        problems.append("config.json: only softmax scoring with greedy top-k is supported")
    if lm["hidden_act"] != "silu" or lm["attention_bias"] or lm["tie_word_embeddings"]:
        problems.append("config.json: hidden_act must be silu, attention_bias and tie_word_embeddings false")
    if problems:
        raise ExportError("impossible config:\n  " + "\n  ".join(problems))
    if lm["hidden_size"] % lm["num_attention_heads"]:
        raise ExportError(f"config.json: hidden_size {lm['hidden_size']} is not a multiple of "
                          f"num_attention_heads {lm['num_attention_heads']}")

    pe = shape("model.sam_model.patch_embed.proj.weight")  # [width, 3, patch, patch]
    pos = shape("model.sam_model.pos_embed")                # [1, grid, grid, width]
    sam_depth = count_indexed(names, "model.sam_model.blocks.")
    rel_rows = [shape(f"model.sam_model.blocks.{i}.attn.rel_pos_h")[0] for i in range(sam_depth)]
    sam_head_dim = shape("model.sam_model.blocks.0.attn.rel_pos_h")[1]
    global_rows = 2 * pos[1] - 1
    global_blocks = [i for i, r in enumerate(rel_rows) if r == global_rows]
    window_rows = sorted(set(r for r in rel_rows if r != global_rows))
    if len(window_rows) > 1 or any(r % 2 == 0 for r in window_rows):
        raise ExportError(f"SAM windowed blocks disagree on their rel-pos table rows: {window_rows}")
    vision = cfg.get("vision_config", {}).get("width", {})
    clip_cfg = vision.get("clip-l-14-224", {})
    sam_cfg = vision.get("sam_vit_b", {})
    clip_width = shape("model.vision_model.transformer.layers.0.self_attn.qkv_proj.weight")[1]
    # The CLIP head count is not visible in any tensor shape: take it from vision_config.
    clip_heads = clip_cfg.get("heads")
    if not isinstance(clip_heads, int) or clip_heads <= 0 or clip_width % clip_heads:
        raise ExportError(f"config.json: vision_config.width['clip-l-14-224'].heads = {clip_heads!r} does not "
                          f"divide the CLIP width {clip_width}")
    sam_heads = pe[0] // sam_head_dim
    if sam_cfg.get("heads") not in (None, sam_heads):
        raise ExportError(f"config.json: SAM heads {sam_cfg.get('heads')} disagree with the rel-pos tables "
                          f"(width {pe[0]} / head_dim {sam_head_dim} = {sam_heads})")
    clip_pos_rows = shape("model.vision_model.embeddings.position_embedding.weight")[0]
    clip_grid = int(round((clip_pos_rows - 1) ** 0.5))
    if clip_grid * clip_grid + 1 != clip_pos_rows:
        raise ExportError(f"CLIP position table has {clip_pos_rows} rows, not a square grid + 1")
    n_layers = lm["num_hidden_layers"]
    first_dense = lm["first_k_dense_replace"] or 0
    moe_layers = list(range(first_dense, n_layers))
    n_experts = count_indexed(names, f"model.layers.{moe_layers[0]}.mlp.experts.") if moe_layers else 0
    shared_name = f"model.layers.{moe_layers[0]}.mlp.shared_experts.gate_proj.weight" if moe_layers else None
    d = {
        "sam_width": pe[0], "sam_patch": pe[2], "sam_pos_grid": pos[1], "sam_depth": sam_depth,
        "sam_heads": sam_heads, "sam_global_blocks": global_blocks,
        "sam_window": (window_rows[0] + 1) // 2 if window_rows else 0,
        "sam_mlp_hidden": shape("model.sam_model.blocks.0.mlp.lin1.weight")[0],
        "sam_eps": SAM_LAYERNORM_EPS,
        "sam_neck": shape("model.sam_model.neck.0.weight")[0],
        "sam_net2": shape("model.sam_model.net_2.weight")[0],
        "sam_net3": shape("model.sam_model.net_3.weight")[0],
        "clip_width": clip_width, "clip_heads": clip_heads,
        "clip_layers": count_indexed(names, "model.vision_model.transformer.layers."),
        "clip_ffn": shape("model.vision_model.transformer.layers.0.mlp.fc1.weight")[0],
        "clip_pos_grid": clip_grid, "clip_eps": CLIP_LAYERNORM_EPS,
        "hidden": lm["hidden_size"], "vocab": shape("model.embed_tokens.weight")[0],
        "n_layers": n_layers, "n_heads": lm["num_attention_heads"],
        "first_dense": first_dense,
        "dense_inter": shape("model.layers.0.mlp.gate_proj.weight")[0] if first_dense > 0 else 0,
        "n_experts": n_experts, "top_k": lm["num_experts_per_tok"] or 0,
        "moe_inter": shape(f"model.layers.{moe_layers[0]}.mlp.experts.0.gate_proj.weight")[0] if moe_layers else 0,
        "shared_inter": shape(shared_name)[0] if shared_name and shared_name in names else 0,
        "norm_topk_prob": bool(lm["norm_topk_prob"]),
        "routed_scaling": float(lm["routed_scaling_factor"]),
        "rms_eps": float(lm["rms_norm_eps"]), "rope_theta": float(lm["rope_theta"]),
        "max_positions": lm["max_position_embeddings"] or 8192,
        "bos_token_id": lm["bos_token_id"], "eos_token_id": lm["eos_token_id"],
    }
    if d["vocab"] != lm["vocab_size"]:
        raise ExportError(f"model.embed_tokens.weight has {d['vocab']} rows but config vocab_size is {lm['vocab_size']}")
    if d["sam_net3"] != clip_width:
        raise ExportError(f"SAM net_3 gives {d['sam_net3']} channels but CLIP is {clip_width} wide")
    if moe_layers and d["n_experts"] != lm["n_routed_experts"]:
        raise ExportError(f"checkpoint has {d['n_experts']} experts per MoE layer, config n_routed_experts "
                          f"is {lm['n_routed_experts']}")
    if moe_layers and not (1 <= d["top_k"] <= d["n_experts"]):
        raise ExportError(f"config.json: num_experts_per_tok {d['top_k']} out of range 1..{d['n_experts']}")
    return d


def expected_tensors(d: dict) -> dict:
    """Official tensor name -> shape, for the dims d (spec 3)."""
    t = {}
    w, hd = d["sam_width"], d["sam_width"] // d["sam_heads"]
    s = "model.sam_model."
    t[s + "patch_embed.proj.weight"] = [w, 3, d["sam_patch"], d["sam_patch"]]
    t[s + "patch_embed.proj.bias"] = [w]
    t[s + "pos_embed"] = [1, d["sam_pos_grid"], d["sam_pos_grid"], w]
    for i in range(d["sam_depth"]):
        b = f"{s}blocks.{i}."
        rows = 2 * d["sam_pos_grid"] - 1 if i in d["sam_global_blocks"] else 2 * d["sam_window"] - 1
        for n in ["norm1", "norm2"]:
            t[b + n + ".weight"] = [w]
            t[b + n + ".bias"] = [w]
        t[b + "attn.qkv.weight"] = [3 * w, w]
        t[b + "attn.qkv.bias"] = [3 * w]
        t[b + "attn.proj.weight"] = [w, w]
        t[b + "attn.proj.bias"] = [w]
        t[b + "attn.rel_pos_h"] = [rows, hd]
        t[b + "attn.rel_pos_w"] = [rows, hd]
        t[b + "mlp.lin1.weight"] = [d["sam_mlp_hidden"], w]
        t[b + "mlp.lin1.bias"] = [d["sam_mlp_hidden"]]
        t[b + "mlp.lin2.weight"] = [w, d["sam_mlp_hidden"]]
        t[b + "mlp.lin2.bias"] = [w]
    nc = d["sam_neck"]
    t[s + "neck.0.weight"] = [nc, w, 1, 1]
    t[s + "neck.1.weight"] = [nc]
    t[s + "neck.1.bias"] = [nc]
    t[s + "neck.2.weight"] = [nc, nc, 3, 3]
    t[s + "neck.3.weight"] = [nc]
    t[s + "neck.3.bias"] = [nc]
    t[s + "net_2.weight"] = [d["sam_net2"], nc, 3, 3]
    t[s + "net_3.weight"] = [d["sam_net3"], d["sam_net2"], 3, 3]
    c = "model.vision_model."
    cw = d["clip_width"]
    t[c + "embeddings.class_embedding"] = [cw]
    t[c + "embeddings.patch_embedding.weight"] = None  # unused at inference; any shape accepted
    t[c + "embeddings.position_embedding.weight"] = [d["clip_pos_grid"] ** 2 + 1, cw]
    t[c + "pre_layrnorm.weight"] = [cw]
    t[c + "pre_layrnorm.bias"] = [cw]
    for i in range(d["clip_layers"]):
        b = f"{c}transformer.layers.{i}."
        for n in ["layer_norm1", "layer_norm2"]:
            t[b + n + ".weight"] = [cw]
            t[b + n + ".bias"] = [cw]
        t[b + "self_attn.qkv_proj.weight"] = [3 * cw, cw]
        t[b + "self_attn.qkv_proj.bias"] = [3 * cw]
        t[b + "self_attn.out_proj.weight"] = [cw, cw]
        t[b + "self_attn.out_proj.bias"] = [cw]
        t[b + "mlp.fc1.weight"] = [d["clip_ffn"], cw]
        t[b + "mlp.fc1.bias"] = [d["clip_ffn"]]
        t[b + "mlp.fc2.weight"] = [cw, d["clip_ffn"]]
        t[b + "mlp.fc2.bias"] = [cw]
    h = d["hidden"]
    t["model.projector.layers.weight"] = [h, cw + d["sam_net3"]]
    t["model.projector.layers.bias"] = [h]
    t["model.image_newline"] = [h]
    t["model.view_seperator"] = [h]
    t["model.embed_tokens.weight"] = [d["vocab"], h]
    t["lm_head.weight"] = [d["vocab"], h]
    t["model.norm.weight"] = [h]
    for i in range(d["n_layers"]):
        b = f"model.layers.{i}."
        t[b + "input_layernorm.weight"] = [h]
        t[b + "post_attention_layernorm.weight"] = [h]
        for p in "qkvo":
            t[b + f"self_attn.{p}_proj.weight"] = [h, h]
        if i < d["first_dense"]:
            t[b + "mlp.gate_proj.weight"] = [d["dense_inter"], h]
            t[b + "mlp.up_proj.weight"] = [d["dense_inter"], h]
            t[b + "mlp.down_proj.weight"] = [h, d["dense_inter"]]
        else:
            t[b + "mlp.gate.weight"] = [d["n_experts"], h]
            for e in range(d["n_experts"]):
                t[b + f"mlp.experts.{e}.gate_proj.weight"] = [d["moe_inter"], h]
                t[b + f"mlp.experts.{e}.up_proj.weight"] = [d["moe_inter"], h]
                t[b + f"mlp.experts.{e}.down_proj.weight"] = [h, d["moe_inter"]]
            if d["shared_inter"]:
                t[b + "mlp.shared_experts.gate_proj.weight"] = [d["shared_inter"], h]
                t[b + "mlp.shared_experts.up_proj.weight"] = [d["shared_inter"], h]
                t[b + "mlp.shared_experts.down_proj.weight"] = [h, d["shared_inter"]]
    return t


def validate(reader: SafetensorsReader, d: dict):
    expected = expected_tensors(d)
    have = set(reader.names())
    # Buffers some exporters write (the HF module has a position_ids buffer): harmless extras.
    ignorable = {"model.vision_model.embeddings.position_ids"}
    missing = sorted(set(expected) - have)
    unexpected = sorted(have - set(expected) - ignorable)
    misshaped = [f"{n}: {reader.shape(n)} (expected {expected[n]})" for n in sorted(set(expected) & have)
                 if expected[n] is not None and reader.shape(n) != expected[n]]
    if missing or unexpected or misshaped:
        lines = [f"missing tensor {n} {expected[n]}" for n in missing]
        lines += [f"unexpected tensor {n} {reader.shape(n)}" for n in unexpected]
        lines += [f"mis-shaped tensor {m}" for m in misshaped]
        raise ExportError(f"checkpoint does not match config.json ({len(missing)} missing, {len(unexpected)} "
                          f"unexpected, {len(misshaped)} mis-shaped):\n  " + "\n  ".join(lines))


# ---------------------------------------------------------------------------------------------
# filling the modules


def fill(module: torch.nn.Module, name: str, value: torch.Tensor):
    """Materialise parameter `name` of `module` from `value` (cast to its dtype)."""
    *path, leaf = name.split(".")
    owner = module
    for p in path:
        owner = getattr(owner, p)
    old = getattr(owner, leaf)
    t = torch.empty(old.shape, dtype=old.dtype)
    t.copy_(value.reshape(old.shape))
    setattr(owner, leaf, torch.nn.Parameter(t, requires_grad=False))


def fill_stacked(module, name, values):
    """Materialise parameter `name` as the row-wise concatenation of `values` (e.g. [gate; up])."""
    fill(module, name, torch.cat([v for v in values], dim=0))


def build_encoder(reader, d, dtype):
    enc = ocr_modules.Encoder(d, dtype)
    s = "model.sam_model."
    fill(enc, "sam.patch_embed.weight", reader.tensor(s + "patch_embed.proj.weight"))
    fill(enc, "sam.patch_embed.bias", reader.tensor(s + "patch_embed.proj.bias"))
    fill(enc, "sam.pos_embed", reader.tensor(s + "pos_embed"))
    for i in range(d["sam_depth"]):
        src, dst = f"{s}blocks.{i}.", f"sam.blocks.{i}."
        for a, b in [("norm1.weight", "norm1.weight"), ("norm1.bias", "norm1.bias"),
                     ("norm2.weight", "norm2.weight"), ("norm2.bias", "norm2.bias"),
                     ("attn.qkv.weight", "attn.qkv.weight"), ("attn.qkv.bias", "attn.qkv.bias"),
                     ("attn.proj.weight", "attn.proj.weight"), ("attn.proj.bias", "attn.proj.bias"),
                     ("attn.rel_pos_h", "attn.rel_pos_h"), ("attn.rel_pos_w", "attn.rel_pos_w"),
                     ("mlp.lin1.weight", "lin1.weight"), ("mlp.lin1.bias", "lin1.bias"),
                     ("mlp.lin2.weight", "lin2.weight"), ("mlp.lin2.bias", "lin2.bias")]:
            fill(enc, dst + b, reader.tensor(src + a))
    for a, b in [("neck.0.weight", "neck0.weight"), ("neck.1.weight", "neck1.weight"), ("neck.1.bias", "neck1.bias"),
                 ("neck.2.weight", "neck2.weight"), ("neck.3.weight", "neck3.weight"), ("neck.3.bias", "neck3.bias"),
                 ("net_2.weight", "net_2.weight"), ("net_3.weight", "net_3.weight")]:
        fill(enc, "sam." + b, reader.tensor(s + a))
    c = "model.vision_model."
    fill(enc, "clip.class_embedding", reader.tensor(c + "embeddings.class_embedding"))
    fill(enc, "clip.position_embedding", reader.tensor(c + "embeddings.position_embedding.weight"))
    fill(enc, "clip.pre_layrnorm.weight", reader.tensor(c + "pre_layrnorm.weight"))
    fill(enc, "clip.pre_layrnorm.bias", reader.tensor(c + "pre_layrnorm.bias"))
    for i in range(d["clip_layers"]):
        src, dst = f"{c}transformer.layers.{i}.", f"clip.layers.{i}."
        for a, b in [("layer_norm1.weight", "layer_norm1.weight"), ("layer_norm1.bias", "layer_norm1.bias"),
                     ("layer_norm2.weight", "layer_norm2.weight"), ("layer_norm2.bias", "layer_norm2.bias"),
                     ("self_attn.qkv_proj.weight", "qkv_proj.weight"), ("self_attn.qkv_proj.bias", "qkv_proj.bias"),
                     ("self_attn.out_proj.weight", "out_proj.weight"), ("self_attn.out_proj.bias", "out_proj.bias"),
                     ("mlp.fc1.weight", "fc1.weight"), ("mlp.fc1.bias", "fc1.bias"),
                     ("mlp.fc2.weight", "fc2.weight"), ("mlp.fc2.bias", "fc2.bias")]:
            fill(enc, dst + b, reader.tensor(src + a))
    fill(enc, "projector.weight", reader.tensor("model.projector.layers.weight"))
    fill(enc, "projector.bias", reader.tensor("model.projector.layers.bias"))
    fill(enc, "image_newline", reader.tensor("model.image_newline"))
    fill(enc, "view_seperator", reader.tensor("model.view_seperator"))
    return enc


def build_decoder(reader, d, dtype):
    dec = ocr_modules.Decoder(d, dtype)
    fill(dec, "embed_tokens", reader.tensor("model.embed_tokens.weight"))
    fill(dec, "lm_head", reader.tensor("lm_head.weight"))
    fill(dec, "norm.weight", reader.tensor("model.norm.weight"))
    for i in range(d["n_layers"]):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        fill(dec, dst + "input_layernorm.weight", reader.tensor(src + "input_layernorm.weight"))
        fill(dec, dst + "post_attention_layernorm.weight", reader.tensor(src + "post_attention_layernorm.weight"))
        fill_stacked(dec, dst + "self_attn.qkv_proj.weight",
                     [reader.tensor(src + f"self_attn.{p}_proj.weight") for p in "qkv"])
        fill(dec, dst + "self_attn.o_proj.weight", reader.tensor(src + "self_attn.o_proj.weight"))
        if i < d["first_dense"]:
            fill_stacked(dec, dst + "mlp.gate_up", [reader.tensor(src + "mlp.gate_proj.weight"),
                                                   reader.tensor(src + "mlp.up_proj.weight")])
            fill(dec, dst + "mlp.down", reader.tensor(src + "mlp.down_proj.weight"))
            continue
        fill(dec, dst + "mlp.router", reader.tensor(src + "mlp.gate.weight"))
        layer_mlp = dec.layers[i].mlp
        gate_up = torch.empty(layer_mlp.w_gate_up.shape, dtype=layer_mlp.w_gate_up.dtype)
        down = torch.empty(layer_mlp.w_down.shape, dtype=layer_mlp.w_down.dtype)
        inter = d["moe_inter"]
        for e in range(d["n_experts"]):
            ex = f"{src}mlp.experts.{e}."
            gate_up[e, :inter].copy_(reader.tensor(ex + "gate_proj.weight"))
            gate_up[e, inter:].copy_(reader.tensor(ex + "up_proj.weight"))
            down[e].copy_(reader.tensor(ex + "down_proj.weight"))
        layer_mlp.w_gate_up = torch.nn.Parameter(gate_up, requires_grad=False)
        layer_mlp.w_down = torch.nn.Parameter(down, requires_grad=False)
        if d["shared_inter"]:
            fill_stacked(dec, dst + "mlp.shared.gate_up", [reader.tensor(src + "mlp.shared_experts.gate_proj.weight"),
                                                          reader.tensor(src + "mlp.shared_experts.up_proj.weight")])
            fill(dec, dst + "mlp.shared.down", reader.tensor(src + "mlp.shared_experts.down_proj.weight"))
    return dec


def check_materialised(module, what):
    meta = [n for n, p in module.named_parameters() if p.is_meta]
    if meta:
        raise ExportError(f"internal error: {what} parameters left unfilled: {meta[:5]}")


# ---------------------------------------------------------------------------------------------


def find_ops_lib(explicit):
    candidates = [explicit, os.environ.get("OCR_OPS_LIB")]
    here = Path(__file__).resolve().parent
    candidates += [str(here.parent / "build" / "libocr_ops.so"), str(here.parent.parent.parent / "lib" / "libocr_ops.so")]
    for c in candidates:
        if c and Path(c).exists():
            return c
    raise ExportError("cannot find libocr_ops.so (the custom-op library); build ocr-cli first or pass --ops-lib")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def special_tokens(tokenizer_json: Path, d: dict) -> dict:
    tok = json.loads(tokenizer_json.read_text())
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    wanted = {"image": "<image>", "ref_open": "<|ref|>", "ref_close": "<|/ref|>", "det_open": "<|det|>",
              "det_close": "<|/det|>", "grounding": "<|grounding|>", "td_open": "<td>", "td_close": "</td>"}
    out = {"bos": d["bos_token_id"], "eos": d["eos_token_id"]}
    for key, content in wanted.items():
        if content not in added:
            raise ExportError(f"{tokenizer_json}: added token {content!r} is missing")
        out[key] = added[content]
    return out


def export(checkpoint: Path, out_dir: Path, dtype_name: str, ops_lib: str):
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    cfg_path = checkpoint / "config.json"
    if not cfg_path.exists():
        raise ExportError(f"{checkpoint}: no config.json (is this a Hugging Face checkpoint folder?)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ExportError(f"{cfg_path}: not valid JSON ({e})")
    tokenizer_json = checkpoint / "tokenizer.json"
    if not tokenizer_json.exists():
        raise ExportError(f"{checkpoint}: no tokenizer.json")
    reader = SafetensorsReader(checkpoint)
    d = derive_dims(cfg, reader)
    validate(reader, d)
    torch.ops.load_library(ops_lib)

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".export-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with torch.no_grad():
        enc = build_encoder(reader, d, dtype)
        check_materialised(enc, "encoder")
        torch.jit.save(torch.jit.script(enc.eval()), str(tmp / "encoder.pt"))
        del enc
        dec = build_decoder(reader, d, dtype)
        check_materialised(dec, "decoder")
        torch.jit.save(torch.jit.script(dec.eval()), str(tmp / "decoder.pt"))
        del dec
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        if (checkpoint / name).exists():
            shutil.copyfile(checkpoint / name, tmp / name)
    patch = d["sam_patch"]
    downsample = 4  # net_2 and net_3 both have stride 2 (spec 2.1.2)
    proc = checkpoint / "processor_config.json"
    if proc.exists():
        pc = json.loads(proc.read_text())
        patch = pc.get("patch_size", patch)
        downsample = pc.get("downsample_ratio", downsample)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dtype": {"bf16": "bfloat16", "fp32": "float32"}[dtype_name],
        "source": {"config": cfg.get("_name_or_path", str(checkpoint)), "architectures": cfg.get("architectures")},
        "dims": d,
        "special_tokens": special_tokens(tokenizer_json, d),
        "image": {"patch_size": patch, "downsample_ratio": downsample, "pad_color": 127,
                  "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "min_tiles": 2, "max_tiles": 9},
        "modes": [{"name": n, "base_size": b, "image_size": s, "crop_mode": c} for n, b, s, c in OFFICIAL_MODES],
        "files": {name: sha256_file(tmp / name) for name in ["encoder.pt", "decoder.pt", "tokenizer.json"]},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for p in tmp.iterdir():
        os.replace(p, out_dir / p.name)
    tmp.rmdir()
    return manifest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="Hugging Face DeepSeek-OCR folder (config.json, *.safetensors)")
    ap.add_argument("out_dir", type=Path, help="output model folder for ocr-cli --model")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--ops-lib", default=None, help="path of libocr_ops.so (default: build/ or $OCR_OPS_LIB)")
    args = ap.parse_args(argv)
    try:
        manifest = export(args.checkpoint, args.out_dir, args.dtype, find_ops_lib(args.ops_lib))
    except ExportError as e:
        print(f"export.py: error: {e}", file=sys.stderr)
        return 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"out_dir": str(args.out_dir), "dtype": manifest["dtype"], "files": manifest["files"],
                      "peak_rss_bytes": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
