#!/usr/bin/env python3
"""`ocr-cli tokenize` / `ocr-cli detokenize` on the HF goldens, fed as the golden files' own lines.

Every line of shared/fixtures/tokenizer/*.jsonl goes through the real binary in one call per
command: encode lines (objects with "text") -> ids; decode lines (objects with "ids") -> text
with and without --skip-special. Also the input forms (JSON string, raw line with CR, empty line)
and the error paths (a malformed detokenize line names its line number; no tokenizer.json).
Env: OCR_CLI, OCR_SHARED_DIR. The last line reads `tokenize_cli: N passed, M failed`.
"""
import json
import os
import subprocess
import sys
import tempfile

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        if failed <= 10:
            print("FAIL " + what, flush=True)


def run(cli, args, data):
    return subprocess.run([cli] + args, input=data.encode("utf-8"), capture_output=True,
                          timeout=600)


def main():
    cli = os.environ.get("OCR_CLI")
    shared = os.environ.get("OCR_SHARED_DIR")
    if not cli or not shared:
        print("set OCR_CLI and OCR_SHARED_DIR (ctest does)", file=sys.stderr)
        return 2
    goldens = os.path.join(shared, "fixtures", "tokenizer")
    with tempfile.TemporaryDirectory() as model_dir:
        os.symlink(os.path.join(shared, "fixtures", "parity-a", "tokenizer.json"),
                   os.path.join(model_dir, "tokenizer.json"))
        model = ["--model", model_dir]

        # Encode goldens: the jsonl lines themselves are valid tokenize input.
        enc_lines = open(os.path.join(goldens, "deepseek_v3_ocr_encode.jsonl"),
                         encoding="utf-8").read().splitlines()
        rows = [json.loads(line) for line in enc_lines]
        proc = run(cli, ["tokenize"] + model, "".join(line + "\n" for line in enc_lines))
        check(proc.returncode == 0, f"tokenize exit {proc.returncode}: {proc.stderr[-500:]}")
        out = proc.stdout.decode("utf-8").splitlines()
        check(len(out) == len(rows), f"tokenize: {len(rows)} lines in, {len(out)} out")
        for row, line in zip(rows, out):
            check(json.loads(line) == row["ids"], f"tokenize {json.dumps(row['text'])}: {line}")

        # The same ids back: plain arrays.
        proc = run(cli, ["detokenize"] + model, "".join(json.dumps(r["ids"]) + "\n" for r in rows))
        out = proc.stdout.decode("utf-8").splitlines()
        check(proc.returncode == 0 and len(out) == len(rows), "detokenize encode ids")
        for row, line in zip(rows, out):
            check(json.loads(line) == row["decoded"], f"detokenize {row['ids']}: {line}")

        # Decode goldens, objects with "ids", with and without --skip-special.
        dec_lines = open(os.path.join(goldens, "deepseek_v3_ocr_decode.jsonl"),
                         encoding="utf-8").read().splitlines()
        rows = [json.loads(line) for line in dec_lines]
        for flag, key in (([], "decoded"), (["--skip-special"], "decoded_skip_special")):
            proc = run(cli, ["detokenize"] + model + flag, "".join(l + "\n" for l in dec_lines))
            out = proc.stdout.decode("utf-8").splitlines()
            check(proc.returncode == 0 and len(out) == len(rows), f"detokenize {flag}")
            for row, line in zip(rows, out):
                check(json.loads(line) == row[key], f"detokenize {flag} {row['ids']}: {line}")

        # Input forms: a JSON string (newline inside), a raw line keeping its CR, an empty line,
        # a raw line that only looks like JSON.
        proc = run(cli, ["tokenize"] + model, '"<image>\\nx"\nx\r\n\n"unterminated\n')
        out = proc.stdout.decode("utf-8").splitlines()
        ref = run(cli, ["tokenize"] + model, "x\n").stdout.decode("utf-8").strip()
        check(proc.returncode == 0 and len(out) == 4, f"tokenize forms: {out}")
        if len(out) == 4:
            check(json.loads(out[0])[:2] == [128815, 201], f"JSON string line: {out[0]}")
            check(json.loads(out[1]) == json.loads(ref) + [204], f"raw line with CR: {out[1]}")
            check(out[2] == "[]", f"empty line: {out[2]}")
            check(len(json.loads(out[3])) > 1, f"raw quote line: {out[3]}")

        # Only a line that is exactly JSON is JSON (a CR before the newline aside).
        proc = run(cli, ["tokenize"] + model, '"a"\r\n  "a"\n{"text": "a"}\r\n')
        out = proc.stdout.decode("utf-8").splitlines()
        check(out[:1] * 2 == [out[0], out[2]] and out[0] != out[1] and len(out) == 3,
              f"JSON line detection: {out}")

        # Errors: malformed detokenize input names its line; a folder without tokenizer.json.
        for bad in ('[1, 2]\n["x"]\n', '[1]\n[1.5]\n', '[1]\n{"text": "a"}\n', "[1]\n[-3]\n"):
            proc = run(cli, ["detokenize"] + model, bad)
            err = proc.stderr.decode("utf-8")
            check(proc.returncode == 1 and "line 2" in err and err.count("\n") == 1,
                  f"detokenize {bad!r}: exit {proc.returncode}, stderr {err!r}")
        proc = run(cli, ["tokenize"] + model, '{"ids": [1]}\n')
        check(proc.returncode == 1 and "line 1" in proc.stderr.decode(), "tokenize object without text")
        with tempfile.TemporaryDirectory() as empty:
            proc = run(cli, ["tokenize", "--model", empty], "x\n")
            check(proc.returncode == 1 and "tokenizer.json" in proc.stderr.decode(),
                  f"missing tokenizer.json: exit {proc.returncode}")
    print(f"tokenize_cli: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
