#!/usr/bin/env python3
"""Write a DeepSeek-OCR checkpoint in the official Hugging Face format with random weights.

    scripts/make_checkpoint.py OUT_DIR [--preset tiny|small-lm|full] [--full] [--seed N]
                               [--tokenizer-dir DIR] [--list]

config.json follows the official schema (top-level LM fields, language_config, vision_config,
projector_config); model.safetensors holds every tensor under its official name in BF16, written
one tensor at a time (peak memory: the largest tensor). --full gives the real sizes (2,710
tensors, 6.7 GB); --list prints the names and shapes without writing anything.
"""
import argparse
import json
import shutil
import struct
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import expected_tensors  # noqa: E402  (one table of names and shapes for both scripts)

PRESETS = {
    # The real model (spec 1-3).
    "full": dict(sam_width=768, sam_depth=12, sam_heads=12, sam_global_blocks=[2, 5, 8, 11], sam_mlp_hidden=3072,
                 sam_neck=256, sam_net2=512, sam_net3=1024, clip_layers=24, clip_heads=16, clip_ffn=4096,
                 hidden=1280, n_layers=12, n_heads=10, dense_inter=6848, moe_inter=896, n_experts=64, top_k=6,
                 n_shared=2),
    # Small enough for CI on CPU; the sizes of the parity-a fixture.
    "tiny": dict(sam_width=32, sam_depth=4, sam_heads=2, sam_global_blocks=[1, 3], sam_mlp_hidden=128,
                 sam_neck=16, sam_net2=32, sam_net3=64, clip_layers=2, clip_heads=4, clip_ffn=256,
                 hidden=64, n_layers=3, n_heads=4, dense_inter=96, moe_inter=32, n_experts=8, top_k=3, n_shared=2),
}
SPATIAL = dict(sam_patch=16, sam_pos_grid=64, sam_window=14, clip_pos_grid=16, clip_patch=14, vocab=129280)


def dims(preset: dict) -> dict:
    p = dict(SPATIAL, **preset)
    p["clip_width"] = p["sam_net3"]
    p["first_dense"] = 1
    p["shared_inter"] = p["n_shared"] * p["moe_inter"]
    return p


def config_json(d: dict, name: str) -> dict:
    lm = {
        "bos_token_id": 0, "eos_token_id": 1, "first_k_dense_replace": d["first_dense"],
        "hidden_size": d["hidden"], "intermediate_size": d["dense_inter"], "kv_lora_rank": None, "lm_head": True,
        "max_position_embeddings": 8192, "moe_intermediate_size": d["moe_inter"], "n_group": 1,
        "n_routed_experts": d["n_experts"], "n_shared_experts": d["n_shared"],
        "num_attention_heads": d["n_heads"], "num_experts_per_tok": d["top_k"], "num_hidden_layers": d["n_layers"],
        "num_key_value_heads": d["n_heads"], "q_lora_rank": None, "qk_nope_head_dim": 0, "qk_rope_head_dim": 0,
        "rm_head": False, "topk_group": 1, "topk_method": "greedy", "use_mla": False, "v_head_dim": 0,
        "vocab_size": d["vocab"],
    }
    cfg = {
        "_name_or_path": name,
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "architectures": ["DeepseekOCRForCausalLM"],
        "auto_map": {"AutoConfig": "modeling_deepseekocr.DeepseekOCRConfig",
                     "AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM"},
        "language_config": dict({"architectures": ["DeepseekV2ForCausalLM"],
                                 "auto_map": {"AutoConfig": "configuration_deepseekv2.DeepseekV2Config",
                                              "AutoModel": "modeling_deepseek.DeepseekV2Model",
                                              "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM"}},
                                **lm, torch_dtype="bfloat16"),
        "model_type": "deepseek_vl_v2",
        "projector_config": {"input_dim": d["clip_width"] + d["sam_net3"], "model_type": "mlp_projector",
                             "n_embed": d["hidden"], "projector_type": "linear"},
        "tile_tag": "2D",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "vision_config": {"image_size": 1024, "mlp_ratio": 3.7362, "model_name": "deeplip_b_l", "model_type": "vision",
                          "width": {"clip-l-14-224": {"heads": d["clip_heads"], "image_size": 224,
                                                      "layers": d["clip_layers"], "patch_size": d["clip_patch"],
                                                      "width": d["clip_width"]},
                                    "sam_vit_b": {"downsample_channels": [d["sam_net2"], d["sam_net3"]],
                                                  "global_attn_indexes": d["sam_global_blocks"],
                                                  "heads": d["sam_heads"], "layers": d["sam_depth"],
                                                  "width": d["sam_width"]}}},
    }
    cfg.update(lm)
    return cfg


def tensor_table(d: dict) -> dict:
    t = expected_tensors(d)
    t["model.vision_model.embeddings.patch_embedding.weight"] = [d["clip_width"], 3, d["clip_patch"], d["clip_patch"]]
    return t


def random_tensor(name: str, shape, gen: torch.Generator) -> torch.Tensor:
    leaf = name.rsplit(".", 1)[-1]
    is_norm = any(k in name for k in ("norm", "layernorm", "layrnorm", "neck.1.", "neck.3."))
    if is_norm and leaf == "weight":
        return (1.0 + 0.02 * torch.randn(shape, generator=gen)).to(torch.bfloat16)
    if leaf == "bias":
        return (0.02 * torch.randn(shape, generator=gen)).to(torch.bfloat16)
    return (0.02 * torch.randn(shape, generator=gen)).to(torch.bfloat16)


CYCLE_BASE = 1000  # first token id of a --cycle model's loop


def cycle_override(d: dict, k: int, stop: bool = False):
    """A model whose greedy output provably cycles: every layer adds nothing (o_proj and all
    down projections are zero), so the last hidden state is the embedding of the last token;
    embeddings of the loop tokens CYCLE_BASE+i are scaled basis vectors e_i, and lm_head row of
    CYCLE_BASE+(i+1)%k is 4*e_i: after token CYCLE_BASE+i comes CYCLE_BASE+(i+1)%k, by a margin
    of ~30 logits. Every prompt token also maps to e_(k-1), so the loop starts right away.
    With stop, the token after CYCLE_BASE+k-2 is EOS (id 1) instead: k-1 tokens, then EOS."""
    h = d["hidden"]
    if not 1 <= k <= h:
        raise SystemExit(f"--cycle {k}: must be 1..hidden ({h})")

    def override(name, t):
        if name.endswith("o_proj.weight") or "down_proj" in name:
            return torch.zeros_like(t)
        if name.endswith("norm.weight") and name.startswith("model.") and "layers" not in name:
            return torch.ones_like(t)
        if name == "model.embed_tokens.weight":
            t = t.clone()
            t[:] = 0
            t[:, k - 1] = 10.0  # any token -> e_(k-1) -> the loop's first token
            for i in range(k):
                t[CYCLE_BASE + i] = 0
                t[CYCLE_BASE + i, i] = 10.0
            return t
        if name == "lm_head.weight":
            t = t.clone()
            for i in range(k):
                row = 1 if stop and i == k - 2 else CYCLE_BASE + (i + 1) % k
                t[row] = 0
                t[row, i] = 4.0
            return t
        return t
    return override


def write_safetensors(path: Path, table: dict, seed: int, override=None):
    header, offset = {}, 0
    names = sorted(table)
    for name in names:
        n = 1
        for s in table[name]:
            n *= s
        header[name] = {"dtype": "BF16", "shape": table[name], "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    gen = torch.Generator().manual_seed(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            t = random_tensor(name, table[name], gen)
            if override is not None:
                t = override(name, t.float()).to(torch.bfloat16)
            t = t.contiguous()
            f.write(t.view(torch.int16).numpy().tobytes())
    tmp.replace(path)
    return offset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, nargs="?")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--full", action="store_true", help="same as --preset full (the real sizes)")
    ap.add_argument("--seed", type=int, default=0)
    default_tok = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "parity-a"
    ap.add_argument("--tokenizer-dir", type=Path, default=default_tok,
                    help="folder with tokenizer.json (+ tokenizer_config.json, special_tokens_map.json, "
                         "processor_config.json) to copy")
    ap.add_argument("--list", action="store_true", help="print name, shape, dtype of every tensor and exit")
    ap.add_argument("--cycle", type=int, default=0, metavar="K",
                    help=f"craft weights so that greedy decoding loops over ids {CYCLE_BASE}..{CYCLE_BASE}+K-1")
    ap.add_argument("--stop", action="store_true", help="with --cycle: emit K-1 tokens, then EOS")
    args = ap.parse_args(argv)
    d = dims(PRESETS["full" if args.full else args.preset])
    table = tensor_table(d)
    if args.list:
        for name in sorted(table):
            print(f"{name}\t{'x'.join(str(s) for s in table[name])}\tBF16")
        return 0
    if args.out_dir is None:
        ap.error("OUT_DIR is required unless --list")
    if not (args.tokenizer_dir / "tokenizer.json").exists():
        ap.error(f"{args.tokenizer_dir}: no tokenizer.json (pass --tokenizer-dir)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    preset = "full" if args.full else args.preset
    (args.out_dir / "config.json").write_text(json.dumps(config_json(d, f"random-deepseek-ocr-{preset}"), indent=2) + "\n")
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "processor_config.json"]:
        if (args.tokenizer_dir / name).exists():
            shutil.copyfile(args.tokenizer_dir / name, args.out_dir / name)
    override = cycle_override(d, args.cycle, args.stop) if args.cycle else None
    n_bytes = write_safetensors(args.out_dir / "model.safetensors", table, args.seed, override)
    print(json.dumps({"out_dir": str(args.out_dir), "preset": preset, "tensors": len(table), "bytes": n_bytes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
