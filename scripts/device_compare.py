#!/usr/bin/env python3
"""Compares the outputs of one `ttt` command run on two devices (scripts/device_check.sh).

  device_compare.py nll A.bin B.bin TOL          float32 NLL files (--nll-out): max |a - b| <= TOL
  device_compare.py loss "loss X" "loss Y" TOL   two printed losses: |x - y| <= TOL
  device_compare.py tensors A.st B.st RTOL       safetensors (gradients, trained weights): for every
                                                 tensor max |a - b| / max |b| <= RTOL (same names)
Prints one line with the worst difference; exits 1 when it is above the tolerance.
"""
import json
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = {"F32": "<f4", "F64": "<f8"}.get(v["dtype"])
        if dt is None and v["dtype"] == "BF16":
            raw = np.frombuffer(buf, dtype="<u2", count=(e - s) // 2, offset=8 + n + s)
            out[name] = (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
            continue
        if dt is None:
            raise SystemExit(f"{path}: tensor {name} has dtype {v['dtype']}")
        out[name] = np.frombuffer(buf, dtype=dt, count=(e - s) // np.dtype(dt).itemsize, offset=8 + n + s).astype(np.float64)
    return out


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    mode, a, b, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if mode == "nll":
        x, y = np.fromfile(a, "<f4").astype(np.float64), np.fromfile(b, "<f4").astype(np.float64)
        if x.shape != y.shape or x.size == 0:
            raise SystemExit(f"nll: sizes differ or empty ({x.size} vs {y.size})")
        worst, what = float(np.abs(x - y).max()), "max |NLL diff|"
    elif mode == "loss":
        x, y = float(a.split()[-1]), float(b.split()[-1])
        worst, what = abs(x - y), "|loss diff|"
    elif mode == "tensors":
        x, y = load_safetensors(a), load_safetensors(b)
        if sorted(x) != sorted(y):
            raise SystemExit("tensors: the files hold different tensor names")
        worst, what = 0.0, "max relative diff"
        for k in x:
            scale = max(float(np.abs(y[k]).max()) if y[k].size else 0.0, 1e-30)
            d = float(np.abs(x[k] - y[k]).max()) / scale if x[k].size else 0.0
            if d > worst:
                worst, what = d, f"max relative diff (worst: {k})"
    else:
        raise SystemExit(__doc__)
    ok = worst <= tol and np.isfinite(worst)
    print(f"{'ok' if ok else 'FAIL'}: {what} {worst:.3g} (tolerance {tol:g})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
