"""A tiny checkpoint crafted so that greedy decoding prints one fixed grounded block and stops:

    <|ref|>image<|/ref|><|det|>[[100, 200;500:600]]<|/det|>
    Figure one<EOS>

Same construction as scripts/make_checkpoint.py --cycle: every layer adds nothing (o_proj and all
down projections zero), so the next token depends on the last one only; token s_i embeds to the
basis vector e_i and lm_head row s_(i+1) is 4*e_i. All tokens of the sequence are distinct (hence
the odd separators, which ocr-cli's box parser accepts), so the chain is unambiguous. Used by
tests/e2e/test_formats.py to drive boxes, figure crops and overlays through the real binary.
"""
import subprocess
import sys
from pathlib import Path

# The text pieces, each one token of the DeepSeek tokenizer (checked below).
PIECES = ["<|ref|>", "image", "<|/ref|>", "<|det|>", "[[", "100", ",", " ", "200", ";", "500", ":", "600", "]]",
          "<|/det|>", "\n", "Figure", " one"]
TEXT = "".join(PIECES)
GRID_BOX = [100, 200, 500, 600]
LABEL = "image"
EOS_ID = 1


def make(out_dir: Path, src: Path, build: Path, tokenizer_dir: Path, py: str = sys.executable) -> Path:
    """Writes the HF checkpoint to out_dir/hf and exports it (fp32) to out_dir/model."""
    sys.path.insert(0, str(src / "scripts"))
    import make_checkpoint as mc  # noqa: E402
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    ids = []
    for p in PIECES:
        e = tok.encode(p, add_special_tokens=False).ids
        if len(e) != 1:
            raise SystemExit(f"grounded_model: {p!r} is not one token ({e})")
        ids.append(e[0])
    if len(set(ids)) != len(ids) or EOS_ID in ids:
        raise SystemExit(f"grounded_model: token ids must be distinct: {ids}")
    d = mc.dims(mc.PRESETS["tiny"])
    n = len(ids)
    if n + 1 > d["hidden"]:
        raise SystemExit("grounded_model: sequence longer than the hidden size")
    start = n  # the state every other token (the prompt's last) maps to

    def override(name, t):
        if name.endswith("o_proj.weight") or "down_proj" in name:
            return torch.zeros_like(t)
        if name.endswith("norm.weight") and name.startswith("model.") and "layers" not in name:
            return torch.ones_like(t)
        if name == "model.embed_tokens.weight":
            t = torch.zeros_like(t)
            t[:, start] = 10.0
            for i, tid in enumerate(ids):
                t[tid] = 0
                t[tid, i] = 10.0
            return t
        if name == "lm_head.weight":
            t = t.clone()
            nxt = [(start, ids[0])] + [(i, ids[i + 1]) for i in range(n - 1)] + [(n - 1, EOS_ID)]
            for state, tid in nxt:
                t[tid] = 0
                t[tid, state] = 4.0
            return t
        return t

    hf = out_dir / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    import json
    import shutil
    (hf / "config.json").write_text(json.dumps(mc.config_json(d, "grounded-deepseek-ocr-tiny"), indent=2) + "\n")
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "processor_config.json"]:
        if (tokenizer_dir / f).exists():
            shutil.copyfile(tokenizer_dir / f, hf / f)
    mc.write_safetensors(hf / "model.safetensors", mc.tensor_table(d), 7, override)
    model = out_dir / "model"
    subprocess.run([py, str(src / "scripts" / "export.py"), str(hf), str(model), "--dtype", "fp32",
                    "--ops-lib", str(build / "libocr_ops.so")], check=True, capture_output=True)
    return model
