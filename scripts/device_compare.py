#!/usr/bin/env python3
"""Compares the outputs of one `ttt` command run on two devices (scripts/device_check.sh).

  device_compare.py nll A.bin B.bin TOL          float32 NLL files (--nll-out): max |a - b| <= TOL
  device_compare.py loss "loss X" "loss Y" TOL   two printed losses: |x - y| <= TOL
  device_compare.py metrics A.jsonl B.jsonl TOL  the last "loss" of two `ttt train` metrics files
  device_compare.py tensors A.st B.st RTOL       safetensors (gradients, trained weights): for every
                                                 tensor max |a - b| / max |b| <= RTOL (same names)
Prints one line with the worst difference; exits 1 when it is above the tolerance.
"""
import array
import json
import math
import struct
import sys

# Plain Python (no numpy): the GPU machine's Python may lack it, and the files are small.


def floats(buf, code, offset, count):
    a = array.array(code)
    a.frombytes(buf[offset:offset + count * a.itemsize])
    if sys.byteorder != "little":
        a.byteswap()
    return a


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
        if v["dtype"] == "F32":
            out[name] = floats(buf, "f", 8 + n + s, (e - s) // 4)
        elif v["dtype"] == "F64":
            out[name] = floats(buf, "d", 8 + n + s, (e - s) // 8)
        elif v["dtype"] == "BF16":
            raw = floats(buf, "H", 8 + n + s, (e - s) // 2)
            out[name] = array.array("f", struct.unpack("<%df" % len(raw), b"".join(struct.pack("<I", x << 16) for x in raw)))
        else:
            raise SystemExit(f"{path}: tensor {name} has dtype {v['dtype']}")
    return out


def max_abs_diff(x, y):
    worst = 0.0
    for a, b in zip(x, y):
        d = abs(a - b)
        if not d <= worst:  # also NaN
            worst = d if d == d else math.inf
    return worst


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    mode, a, b, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if mode == "nll":
        x, y = (floats(open(p, "rb").read(), "f", 0, len(open(p, "rb").read()) // 4) for p in (a, b))
        if len(x) != len(y) or not x:
            raise SystemExit(f"nll: sizes differ or empty ({len(x)} vs {len(y)})")
        worst, what = max_abs_diff(x, y), "max |NLL diff|"
    elif mode == "loss":
        x, y = float(a.split()[-1]), float(b.split()[-1])
        worst, what = abs(x - y), "|loss diff|"
    elif mode == "metrics":
        last = lambda p: json.loads([l for l in open(p) if l.strip()][-1])["loss"]
        x, y = float(last(a)), float(last(b))
        worst, what = abs(x - y), "|last training loss diff|"
    elif mode == "tensors":
        x, y = load_safetensors(a), load_safetensors(b)
        if sorted(x) != sorted(y):
            raise SystemExit("tensors: the files hold different tensor names")
        worst, what = 0.0, "max relative diff"
        for k in x:
            if len(x[k]) != len(y[k]):
                raise SystemExit(f"tensors: {k} has {len(x[k])} vs {len(y[k])} elements")
            scale = max(max((abs(v) for v in y[k]), default=0.0), 1e-30)
            d = max_abs_diff(x[k], y[k]) / scale
            if d > worst:
                worst, what = d, f"max relative diff (worst: {k})"
    else:
        raise SystemExit(__doc__)
    ok = worst <= tol and math.isfinite(worst)
    print(f"{'ok' if ok else 'FAIL'}: {what} {worst:.3g} (tolerance {tol:g})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
