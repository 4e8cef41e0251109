#!/usr/bin/env python3
"""scripts/get-model.sh without the network: argument handling, --dry-run, exporting a local
snapshot (--from-dir) into a folder the binary runs, --force, failures that leave OUT untouched,
and the download path against a local mirror of the hub's API (HF_ENDPOINT) serving the tiny
checkpoint."""
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checks import Checks  # noqa: E402

CLI = os.environ["OCR_CLI"]
SRC = Path(os.environ["OCR_SOURCE_DIR"])
BUILD = Path(os.environ["OCR_BUILD_DIR"])
MODELS = Path(os.environ["OCR_TEST_MODELS"])
SCRIPT = SRC / "scripts" / "get-model.sh"
OPS = str(BUILD / "libocr_ops.so")
HF = MODELS / "tiny-stop-hf"
PAGE = SRC / "tests" / "data" / "sample_page.png"

check = Checks("get_model")


def get(args, env=None):
    e = dict(os.environ, OCR_PYTHON=os.environ.get("OCR_PYTHON", sys.executable))
    e.pop("OCR_MODEL_SNAPSHOT", None)
    e.update(env or {})
    return subprocess.run(["bash", str(SCRIPT)] + args, capture_output=True, text=True, timeout=900, env=e)


def ocr(model):
    return subprocess.run([CLI, str(PAGE), "--model", str(model), "--mode", "tiny", "--format", "jsonl"],
                          capture_output=True, text=True, timeout=600)


def manifest(d):
    return json.loads((Path(d) / "manifest.json").read_text())


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)

    # Arguments.
    r = get(["--help"])
    check("--help: exit 0, documents the options", r.returncode == 0 and "--from-dir" in r.stdout and "--revision" in r.stdout,
          r.stdout + r.stderr)
    for args, needle in [(["--dtype", "fp16"], "--dtype must be bf16 or fp32"), (["--bogus"], "unknown argument '--bogus'"),
                         (["--repo", "no-slash"], "owner/name"), (["--out"], "--out needs a value")]:
        r = get(args + ["--dry-run"])
        check(f"usage error {args}: exit 2, one line", r.returncode == 2 and needle in r.stderr
              and len(r.stderr.strip().splitlines()) == 1, (r.returncode, r.stderr))
    r = get(["--dry-run"])
    check("--dry-run defaults: official repo at main, bf16, models/deepseek-ocr",
          r.returncode == 0 and "download: deepseek-ai/DeepSeek-OCR@main" in r.stdout
          and f"export.py {SRC}/models/deepseek-ocr.download {SRC}/models/deepseek-ocr.partial --dtype bf16" in r.stdout
          and f"-> {SRC}/models/deepseek-ocr" in r.stdout, r.stdout + r.stderr)
    r = get(["--dry-run", "--revision", "abc123", "--out", str(tmp / "x"), "--dtype", "fp32", "--ops-lib", OPS])
    check("--dry-run with options", "@abc123" in r.stdout and f"--dtype fp32 --ops-lib {OPS}" in r.stdout
          and f"{tmp}/x.download" in r.stdout, r.stdout)
    check("--dry-run runs nothing", not (tmp / "x").exists() and not (tmp / "x.download").exists())

    # A local snapshot: exported like scripts/make_tiny_model.sh does, so the binary gives the same
    # output as with the test model exported from the same checkpoint.
    out = tmp / "m"
    r = get(["--from-dir", str(HF), "--out", str(out), "--dtype", "fp32", "--ops-lib", OPS])
    check("--from-dir: exit 0", r.returncode == 0, r.stderr[-2000:])
    check("--from-dir: a model folder", manifest(out)["dtype"] == "float32"
          and sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (MODELS / "tiny-stop").iterdir()),
          sorted(p.name for p in out.iterdir()))
    check("--from-dir: nothing else left", sorted(p.name for p in tmp.iterdir()) == ["m"], sorted(p.name for p in tmp.iterdir()))
    a, b = ocr(out), ocr(MODELS / "tiny-stop")
    check("the exported model runs like the test model", a.returncode == 0 and
          [json.loads(l)["markdown"] for l in a.stdout.splitlines()] == [json.loads(l)["markdown"] for l in b.stdout.splitlines()],
          (a.stdout, b.stdout, a.stderr[-500:]))

    # OUT exists: refused without --force, replaced with it (default dtype bf16).
    before = (out / "manifest.json").read_bytes()
    r = get(["--from-dir", str(HF), "--out", str(out), "--ops-lib", OPS])
    check("existing OUT: exit 1, untouched", r.returncode == 1 and "--force" in r.stderr
          and (out / "manifest.json").read_bytes() == before, r.stderr)
    r = get(["--from-dir", str(HF), "--out", str(out), "--ops-lib", OPS, "--force"], env={"OCR_MODEL_SNAPSHOT": "/nonexistent"})
    check("--force: replaced, bf16 by default", r.returncode == 0 and manifest(out)["dtype"] == "bfloat16", r.stderr[-1000:])
    r = get(["--out", str(tmp / "env"), "--dry-run"], env={"OCR_MODEL_SNAPSHOT": str(HF)})
    check("$OCR_MODEL_SNAPSHOT selects a local snapshot", f"snapshot: {HF}" in r.stdout and "download:" not in r.stdout,
          r.stdout)

    # Failures leave OUT as it was and no partial folder.
    r = get(["--from-dir", str(tmp / "nope"), "--out", str(tmp / "n")])
    check("missing snapshot: exit 1", r.returncode == 1 and "no such folder" in r.stderr, r.stderr)
    broken = tmp / "broken-hf"
    broken.mkdir()
    for f in HF.iterdir():
        if f.suffix == ".json":
            shutil.copy(f, broken / f.name)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    r = get(["--from-dir", str(broken), "--out", str(out), "--ops-lib", OPS, "--force"])
    check("export fails: exit 1, OUT kept, no partial", r.returncode == 1 and "left as it was" in r.stderr
          and manifest(out)["dtype"] == "bfloat16" and not Path(str(out) + ".partial").exists(), r.stderr[-1000:])
    r = get(["--out", str(tmp / "net"), "--ops-lib", OPS], env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"})
    check("download fails: exit 1, one error line, nothing created", r.returncode == 1
          and sum("error:" in l for l in r.stderr.splitlines()) == 1 and not (tmp / "net").exists()
          and not (tmp / "net.download").exists(), r.stderr)

    # The download path against a local mirror of the hub API (the plain-HTTPS fallback, selected
    # by hiding huggingface_hub): only *.json and *.safetensors are fetched, at the asked revision.
    served = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "processor_config.json"}
    extra = {"README.md": b"readme", "modeling_deepseekocr.py": b"# code"}
    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            api = "/api/models/deepseek-ai/DeepSeek-OCR/revision/v1.0"
            prefix = "/deepseek-ai/DeepSeek-OCR/resolve/v1.0/"
            if self.path == api:
                body = json.dumps({"siblings": [{"rfilename": n} for n in sorted(served | set(extra))]}).encode()
            elif self.path.startswith(prefix) and self.path[len(prefix):] in served:
                body = (HF / self.path[len(prefix):]).read_bytes()
            elif self.path.startswith(prefix) and self.path[len(prefix):] in extra:
                body = extra[self.path[len(prefix):]]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hide = tmp / "hide"
    hide.mkdir()
    (hide / "huggingface_hub.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "PYTHONPATH": str(hide)}
    mirror = tmp / "mirror"
    r = get(["--out", str(mirror), "--revision", "v1.0", "--dtype", "fp32", "--ops-lib", OPS, "--keep-download"], env)
    check("download: exit 0", r.returncode == 0, r.stderr[-2000:])
    fetched = sorted(p.rsplit("/", 1)[1] for p in requests if "/resolve/" in p)
    check("download: only the files export reads", fetched == sorted(served), requests)
    check("download: exported at the asked dtype", manifest(mirror)["dtype"] == "float32", manifest(mirror)["dtype"])
    a = ocr(mirror)
    check("download: the model runs like the test model", a.returncode == 0 and
          [json.loads(l)["markdown"] for l in a.stdout.splitlines()] == [json.loads(l)["markdown"] for l in b.stdout.splitlines()],
          (a.stdout, a.stderr[-500:]))
    check("--keep-download keeps the checkpoint", (Path(str(mirror) + ".download") / "model.safetensors").exists())
    requests.clear()
    r = get(["--out", str(tmp / "mirror2"), "--revision", "v1.0", "--dtype", "fp32", "--ops-lib", OPS,
             "--download-dir", str(Path(str(mirror) + ".download"))], env)
    check("download resumes: present files not fetched again", r.returncode == 0
          and not any("/resolve/" in p for p in requests), requests)
    check("download dir removed after export without --keep-download",
          not Path(str(mirror) + ".download").exists() and (tmp / "mirror2" / "manifest.json").exists())
    server.shutdown()

check.finish()
