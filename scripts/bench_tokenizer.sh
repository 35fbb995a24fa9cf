#!/usr/bin/env bash
# Tokenizer speed: `ttt tokenize --tokenizer <Meta's Llama 3 tokenizer.model>` against tiktoken
# (the reference, `encode(text, disallowed_special=())`) on the same ~10 MB text: this
# repository's sources, prose, CJK, emoji, whitespace runs, digits and random Unicode (the texts of
# tests/tiktoken_compare.py, repeated). Both run on one thread. Prints tokens/s of each; ttt's
# figure is for the whole command (reading the file, loading the tokenizer, writing the ids),
# with its encoding alone beside it (minus a run on an empty file).
#
#   scripts/bench_tokenizer.sh [BUILD_DIR (default: build)] [MEGABYTES (default: 10)]
#
# The reference packages come from PyPI into BUILD_DIR/tiktoken-venv (scripts/tiktoken_venv.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
mb="${2:-10}"
ttt="$build/ttt"
[ -x "$ttt" ] || { echo "bench_tokenizer: no $ttt (build first: scripts/build.sh release)" >&2; exit 1; }
venv="$build/tiktoken-venv"
rc=0
"$root/scripts/tiktoken_venv.sh" "$venv" || rc=$?
[ "$rc" -eq 0 ] || exit "$rc"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" - "$ttt" "$root" "$work" "$mb" <<'PY'
import array, importlib.util, subprocess, sys, time
from pathlib import Path

ttt, root, work, mb = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
sys.path.insert(0, str(root / "tests"))
from tiktoken_compare import make_texts
from llama_models.llama3.tokenizer import Tokenizer

model = Path(list(importlib.util.find_spec("llama_models").submodule_search_locations)[0]) / "llama3" / "tokenizer.model"
enc = Tokenizer(model).model

base = "".join(t for _, t in make_texts(root))
reps = max(1, int(mb * 1e6 / len(base.encode())) + 1)
text = (base * reps)
data = text.encode()
cut = int(mb * 1e6)
while cut < len(data) and (data[cut] & 0xC0) == 0x80:  # cut on a character boundary
    cut += 1
data = data[:cut]
text = data.decode()
src, empty, out = work / "bench.txt", work / "empty.txt", work / "ids.bin"
src.write_bytes(data)
empty.write_bytes(b"")

def run(path):
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([ttt, "tokenize", "--tokenizer", str(model), "--in", str(path), "--out", str(out)],
                       check=True, capture_output=True)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best

t_fixed = run(empty)
t_ttt = run(src)
ids = array.array("i")
ids.frombytes(out.read_bytes())

best = None
for _ in range(3):
    t0 = time.perf_counter()
    ref = enc.encode(text, disallowed_special=())
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
t_tik = best

n = len(ref)
same = "identical ids" if ids.tolist() == ref else "IDS DIFFER"
print(f"text: {len(data) / 1e6:.1f} MB, {n} tokens (tiktoken), {len(ids)} tokens (ttt): {same}")
print(f"ttt tokenize: {len(ids) / t_ttt:,.0f} tokens/s ({t_ttt:.2f} s for the whole command; "
      f"encoding alone {len(ids) / max(t_ttt - t_fixed, 1e-9):,.0f} tokens/s, {t_ttt - t_fixed:.2f} s)")
print(f"tiktoken:     {n / t_tik:,.0f} tokens/s ({t_tik:.2f} s, encode only, best of 3)")
PY
