#!/usr/bin/env bash
# Layering of src/ (README "Backends and devices"), checked on the source text:
#  1. host pointers into tensor memory (Tensor::data<T>(), raw_data()) appear only in backend/,
#     tensor/ (the host copies themselves) and the named boundaries io/safetensors.cpp (file I/O)
#     and dist/device_allreduce.cpp (collectives over device memory: NCCL reads GPU tensors);
#  2. the device-neutral headers backend/backend.h and autodiff/ops.h name no backend folder's
#     header, and tensor/ includes nothing from autodiff/ or backend/;
#  3. the layers above the backends (model, ttt, train, inference, server, eval, io, autodiff)
#     include no header of a particular backend (backend/cpu, backend/checked);
#  4. no include loop between folders (backend/cpu counts as its own folder).
set -u
SRC="$(cd "$(dirname "$0")/../src" && pwd)"
cd "$SRC"
bad=0
fail() { echo "layering: $*"; bad=1; }

hits=$(grep -rnE 'data<[A-Za-z0-9_]+>\(\)|raw_data\(\)' --include='*.cpp' --include='*.h' . |
       grep -vE '^\./(backend|tensor)/' | grep -v '^\./io/safetensors.cpp:' | grep -v '^\./dist/device_allreduce.cpp:')
[ -z "$hits" ] || fail "host pointer access outside backend/ and the named boundaries:
$hits"

for h in backend/backend.h autodiff/ops.h; do
  grep -nE '#include "backend/[a-z_]+/' "$h" && fail "$h includes a particular backend's header"
done
grep -rnE '#include "(autodiff|backend)/' tensor/ && fail "tensor/ includes autodiff/ or backend/"
for d in model ttt train inference server eval io autodiff; do
  grep -rnE '#include "backend/(cpu|checked|cuda)/' "$d"/ && fail "$d/ includes a particular backend's header"
done

python3 - "$SRC" <<'PY' || bad=1
import os, re, sys
src = sys.argv[1]
edges = {}
def folder(path):
    d = os.path.dirname(path)
    return d if d.startswith('backend/') else d.split('/')[0]
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith(('.cpp', '.h')): continue
        rel = os.path.relpath(os.path.join(root, f), src)
        a = folder(rel)
        for line in open(os.path.join(root, f), errors='replace'):
            m = re.match(r'\s*#include "([^"]+)"', line)
            if m and '/' in m.group(1):
                b = folder(m.group(1))
                if b != a: edges.setdefault(a, set()).add(b)
# cycles by depth-first search
state, stack, found = {}, [], []
def visit(n):
    state[n] = 1; stack.append(n)
    for m in sorted(edges.get(n, ())):
        if state.get(m) == 1: found.append(stack[stack.index(m):] + [m])
        elif not state.get(m): visit(m)
    stack.pop(); state[n] = 2
for n in sorted(edges): 
    if not state.get(n): visit(n)
for c in found: print("layering: include loop between folders: " + " -> ".join(c))
sys.exit(1 if found else 0)
PY
[ $bad = 0 ] && echo "layering: ok (host pointers only in backend/, tensor/, io/safetensors.cpp and dist/device_allreduce.cpp; no folder loops)"
exit $bad
