"""PyTorch TTT-E2E for scripts/bench_compare.py: the model of ../shared/SPEC.md sections 2-4.

Written the way one would in PyTorch (no custom kernels): pre-norm blocks with post-norms
(RMSNorm), q/k RMSNorm over head_dim, interleaved-pair RoPE, SwiGLU MLPs, tied embeddings.
Float32 throughout (the engine's precision; no bf16 autocast).

Variants (TorchTTT(variant=...); one worker process each in the driver):
- eager: plain eager PyTorch. Prefill with frozen parameters (requires_grad off; the parts that
  need no gradient under torch.inference_mode), so no autograd graph is recorded except the
  inner gradient's, which needs only the fast weights.
- compile: the same code with the block's pieces around the attention (RMSNorm + q/k/v
  projections + q/k norms + RoPE; output projection + post-norm + residual; each SwiGLU MLP with
  its norms; the final norm + head + cross-entropy) through torch.compile (inductor, CPU C++
  code generation, dynamic=False; compiled once per shape, at the warm-up call), the attention
  left to SDPA's fused kernel. Inside the meta-gradient, whose inner gradients are differentiated
  again (create_graph), only the first L-S blocks are compiled: torch.compile's backward is not
  differentiable a second time.

- Attention: F.scaled_dot_product_attention. Full causal attention over a whole sequence uses
  is_causal=True (PyTorch's CPU flash kernel: no T x T score matrix); sliding-window attention runs
  in query blocks of 256 against their window of keys with a boolean mask. Inside the TTT-E2E
  meta-gradient the prime blocks' attention is written out (matmul, masked softmax, matmul),
  because SDPA's fused CPU backward is not differentiable a second time.
- TTT-E2E prefill (section 3): the first L-S blocks run over the whole sequence; the last S run
  chunk by chunk (b tokens) with key/value caches of the previous W tokens. Each chunk is scored
  with the current fast weights phi (the prime MLPs' w1, w2, w3), then
  phi <- phi - eta * clip_1(grad of the chunk's masked mean NLL) (global-norm clip over all
  inner matrices; caches are constants of that gradient). No update after the last chunk (its
  result would be unused).
- Meta-gradient (section 4): the same loop with create_graph=True, phi starting as the model's
  parameters, caches not detached; outer loss = mean over chunks of the chunk losses; backward
  to every parameter, then clip 1.0 and AdamW (0.9/0.95, wd 0.1) as in the official train step.
- Pretrain gradient: the whole sequence at once, objective = mean over chunks of b of each
  chunk's masked mean, backward, clip, AdamW.

Weights are read from a model directory of section 5 (`ttt init` output), so the engine and
this implementation can be compared on the same weights (bench_compare.py --check does).
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        s, e = v["data_offsets"]
        if v["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4", count=(e - s) // 4, offset=base + s)
        elif v["dtype"] == "BF16":
            a = (np.frombuffer(buf, dtype="<u2", count=(e - s) // 2, offset=base + s).astype(np.uint32) << 16).view(np.float32)
        elif v["dtype"] == "F64":
            a = np.frombuffer(buf, dtype="<f8", count=(e - s) // 8, offset=base + s)
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {v['dtype']}")
        out[name] = a.reshape(v["shape"]).copy()
    return out


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def swiglu(x, w1, w3, w2):
    return (F.silu(x @ w1) * (x @ w3)) @ w2


def rope_pairs(x, cos, sin):  # x [n, H, hd]; pairs (2i, 2i+1)
    x2 = x.unflatten(-1, (x.shape[-1] // 2, 2))
    a, b = x2[..., 0], x2[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2)


# The block's pieces as functions of tensors only, so that one compiled graph serves every layer.
def qkv_piece(h, norm_w, wq, wk, wv, qn_w, kn_w, cos, sin, eps: float, H: int):
    n = h.shape[0]
    a = rms(h, norm_w, eps)
    q = rms((a @ wq).view(n, H, -1), qn_w, eps)
    k = rms((a @ wk).view(n, H, -1), kn_w, eps)
    v = (a @ wv).view(n, H, -1)
    return rope_pairs(q, cos, sin), rope_pairs(k, cos, sin), v


def attn_out_piece(h, o, wo, post_w, eps: float):
    return h + rms(o @ wo, post_w, eps)


def mlp_piece(h, norm_w, w1, w3, w2, post_w, eps: float):
    return h + rms(swiglu(rms(h, norm_w, eps), w1, w3, w2), post_w, eps)


def nll_piece(h, final_w, E, tgt, eps: float):
    return F.cross_entropy(rms(h, final_w, eps) @ E.T, tgt, reduction="none")


EAGER = {"qkv": qkv_piece, "attn_out": attn_out_piece, "mlp": mlp_piece, "nll": nll_piece}
_COMPILED = {}


def pieces(variant):
    if variant == "eager":
        return EAGER
    if variant != "compile":
        raise ValueError(f"unknown PyTorch variant {variant}")
    if not _COMPILED:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = 64  # shapes: whole sequence, chunks, head slices
        _COMPILED.update({k: torch.compile(f, dynamic=False) for k, f in EAGER.items()})
    return _COMPILED


class TorchTTT:
    QBLOCK = 256  # query block of the sliding-window attention over a whole sequence
    HEAD_ROWS = 4096  # rows of the [rows, V] logits at a time in inference

    def __init__(self, model_dir, dtype=torch.float32, device="cpu", variant="eager"):
        self.variant = variant
        self.fast = pieces(variant)  # the compiled pieces (variant compile) or the eager ones
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.cfg = c
        self.dtype = dtype
        self.V, self.d, self.L = c["vocab_size"], c["hidden_size"], c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.hd = self.d // self.H
        self.b = c["mini_batch_size"]
        self.W = 0 if c["seq_modeling_block"] == "self_attention" else c["sliding_window_size"]
        self.S = c.get("suffix_len", 0) if c.get("prime", False) else 0
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 500000.0)
        self.bos = c.get("bos_token_id", 0)
        assert c.get("tie_word_embeddings", True) and c.get("full_attention_every", 0) == 0
        self.device = torch.device(device)  # "cuda" for scripts/device_check.sh
        self.P = {k: torch.tensor(v, dtype=dtype, device=self.device)
                  for k, v in load_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
        self.first_prime = self.L - self.S
        self._rope = None

    # --- pieces -----------------------------------------------------------------------------
    def params(self):
        return self.P

    def rope_tables(self, pos0, n):
        end = pos0 + n
        if self._rope is None or self._rope[0].shape[0] < end:
            with torch.inference_mode(False):  # a normal tensor, also when first made in a prefill
                self._make_rope(end)
        return self._rope[0][pos0:end, None, :], self._rope[1][pos0:end, None, :]

    def _make_rope(self, end):
        m = max(end, 2 * (self._rope[0].shape[0] if self._rope is not None else 0))
        inv = self.theta ** (-torch.arange(0, self.hd, 2, dtype=torch.float64, device=self.device) / self.hd)
        ang = torch.arange(m, dtype=torch.float64, device=self.device)[:, None] * inv[None, :]
        self._rope = (torch.cos(ang).to(self.dtype), torch.sin(ang).to(self.dtype))

    def rope(self, x, cos, sin):
        return rope_pairs(x, cos, sin)

    def attend(self, q, k, v, qpos0, kpos0, manual=False):
        """q [n, H, hd] at positions qpos0.., k/v [m, H, hd] at kpos0..; causal, window W (0: full)."""
        n, m = q.shape[0], k.shape[0]
        if self.W == 0 and not manual and n == m and qpos0 == kpos0:
            o = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
            return o.transpose(0, 1).reshape(n, self.d)
        outs = []
        step = n if manual else self.QBLOCK
        for s in range(0, n, step):
            e = min(n, s + step)
            qa0, qa1 = qpos0 + s, qpos0 + e  # absolute query positions [qa0, qa1)
            k0 = max(kpos0, qa0 - self.W + 1) if self.W else kpos0
            k1 = min(kpos0 + m, qa1)
            qi = torch.arange(qa0, qa1, device=self.device)[:, None]
            ki = torch.arange(k0, k1, device=self.device)[None, :]
            mask = ki <= qi
            if self.W:
                mask &= ki > qi - self.W
            qs = q[s:e].transpose(0, 1)
            ks = k[k0 - kpos0:k1 - kpos0].transpose(0, 1)
            vs = v[k0 - kpos0:k1 - kpos0].transpose(0, 1)
            if manual:
                sc = (qs @ ks.transpose(1, 2)) * (1.0 / math.sqrt(self.hd))
                o = torch.softmax(sc.masked_fill(~mask, float("-inf")), dim=-1) @ vs
            else:
                o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask)
            outs.append(o.transpose(0, 1))
        return torch.cat(outs, 0).reshape(n, self.d)

    def block(self, l, h, pos0, cache=None, phi=None, manual=False):
        """Block l on the tokens h [n, d] at positions pos0..; cache: (k, v) of the tokens just
        before (RoPE applied). Returns the output and this segment's (k, v). manual: written-out
        attention and eager pieces (the meta-gradient's twice-differentiated blocks)."""
        P, p, eps, n = self.P, f"blocks.{l}.", self.eps, h.shape[0]
        f = EAGER if manual else self.fast
        cos, sin = self.rope_tables(pos0, n)
        q, k, v = f["qkv"](h, P[p + "attn_norm.weight"], P[p + "attn.wq"], P[p + "attn.wk"], P[p + "attn.wv"],
                           P[p + "attn.q_norm.weight"], P[p + "attn.k_norm.weight"], cos, sin, eps, self.H)
        if cache is not None and cache[0].shape[0] > 0:
            kk, vv = torch.cat((cache[0], k), 0), torch.cat((cache[1], v), 0)
        else:
            kk, vv = k, v
        o = self.attend(q, kk, vv, pos0, pos0 + n - kk.shape[0], manual)
        h = f["attn_out"](h, o, P[p + "attn.wo"], P[p + "attn_post_norm.weight"], eps)
        if l >= self.first_prime:
            w1, w2, w3 = phi if phi is not None else (P[p + "prime.w1"], P[p + "prime.w2"], P[p + "prime.w3"])
            h = f["mlp"](h, P[p + "prime_norm.weight"], w1, w3, w2, P[p + "prime_post_norm.weight"], eps)
        h = f["mlp"](h, P[p + "mlp_norm.weight"], P[p + "mlp.w1"], P[p + "mlp.w3"], P[p + "mlp.w2"],
                     P[p + "mlp_post_norm.weight"], eps)
        return h, (k, v)

    def nll(self, h, tgt, manual=False):
        """Per-token NLL of the targets (final norm, tied head, log-softmax)."""
        f = EAGER if manual else self.fast
        if torch.is_grad_enabled() or h.shape[0] <= self.HEAD_ROWS:
            return f["nll"](h, self.P["final_norm.weight"], self.P["embed.weight"], tgt, self.eps)
        return torch.cat([self.nll(h[s:s + self.HEAD_ROWS], tgt[s:s + self.HEAD_ROWS]) for s in range(0, h.shape[0], self.HEAD_ROWS)])

    def masked_mean(self, nll, tgt):
        m = (tgt != self.bos).to(nll.dtype)
        return (nll * m).sum() / torch.clamp(m.sum(), min=1e-10)

    def trim(self, cache, k, v):
        if cache is None:
            kk, vv = k, v
        else:
            kk, vv = torch.cat((cache[0], k), 0), torch.cat((cache[1], v), 0)
        keep = self.W if self.W else kk.shape[0]
        return kk[-keep:], vv[-keep:]

    def phi0(self):
        return {l: [self.P[f"blocks.{l}.prime.{w}"] for w in ("w1", "w2", "w3")] for l in range(self.first_prime, self.L)}

    # --- workloads ------------------------------------------------------------------------------
    def prefill(self, ids, tgt, ttt=True, inner_lr=1.0):
        """Per-token NLL [T] of a prefill (with test-time training for models with prime blocks)."""
        T = ids.shape[0]
        with torch.inference_mode():  # parameters frozen: nothing recorded
            h = self.P["embed.weight"][ids]
            last = self.first_prime if (self.S and ttt) else self.L
            for l in range(last):
                h, _ = self.block(l, h, 0)
            if last == self.L:
                return self.nll(h, tgt).clone()
        h = h.clone()  # a normal tensor: the chunks below record the inner gradient's graph from it
        phi = {l: [w.detach().clone() for w in ws] for l, ws in self.phi0().items()}
        caches = {l: None for l in phi}
        out = []
        for s in range(0, T, self.b):
            e = min(T, s + self.b)
            update = e < T and inner_lr != 0
            leaves = [w.requires_grad_(update) for ws in phi.values() for w in ws]
            with torch.set_grad_enabled(update) if update else torch.inference_mode():
                y = h[s:e]
                kv = {}
                for l in phi:
                    y, kv[l] = self.block(l, y, s, caches[l], phi[l])
                nll = self.nll(y, tgt[s:e])
                if update:
                    g = torch.autograd.grad(self.masked_mean(nll, tgt[s:e]), leaves)
            out.append(nll.detach())
            for l in phi:
                caches[l] = self.trim(caches[l], kv[l][0].detach(), kv[l][1].detach())
            if update:
                with torch.no_grad():
                    norm = torch.sqrt(sum((x * x).sum() for x in g))
                    scale = inner_lr * torch.clamp(1.0 / norm, max=1.0)
                    it = iter(g)
                    phi = {l: [w.detach() - scale * next(it) for w in ws] for l, ws in phi.items()}
        return torch.cat(out)

    def meta_loss(self, ids, tgt, inner_lr=1.0):
        """Meta-learning objective (mean over chunks of each chunk's loss, scored before its inner
        step), differentiable w.r.t. every parameter through all inner steps."""
        T = ids.shape[0]
        h = self.P["embed.weight"][ids]
        for l in range(self.first_prime):
            h, _ = self.block(l, h, 0)
        phi = self.phi0()
        caches = {l: None for l in phi}
        losses = []
        for s in range(0, T, self.b):
            e = min(T, s + self.b)
            y = h[s:e]
            kv = {}
            for l in phi:
                y, kv[l] = self.block(l, y, s, caches[l], phi[l], manual=True)
            loss = self.masked_mean(self.nll(y, tgt[s:e], manual=True), tgt[s:e])
            losses.append(loss)
            for l in phi:
                caches[l] = self.trim(caches[l], *kv[l])
            if e < T and inner_lr != 0:
                flat = [w for ws in phi.values() for w in ws]
                g = torch.autograd.grad(loss, flat, create_graph=True)
                norm = torch.sqrt(sum((x * x).sum() for x in g))
                # optax clip_by_global_norm: select(norm < 1, g, g / norm)
                scale = inner_lr * torch.where(norm < 1.0, torch.ones_like(norm), 1.0 / norm)
                it = iter(g)
                phi = {l: [w - scale * next(it) for w in ws] for l, ws in phi.items()}
        return torch.stack(losses).mean()

    def pretrain_loss(self, ids, tgt):
        """Pretrain objective: the mean over chunks of b of each chunk's masked mean."""
        T = ids.shape[0]
        h = self.P["embed.weight"][ids]
        for l in range(self.L):
            h, _ = self.block(l, h, 0)
        nll = self.nll(h, tgt)
        b = self.b if T % self.b == 0 else T
        return torch.stack([self.masked_mean(nll[s:s + b], tgt[s:s + b]) for s in range(0, T, b)]).mean()

    def require_grad(self):
        for t in self.P.values():
            t.requires_grad_(True)

    def make_optimizer(self):
        self.require_grad()
        return torch.optim.AdamW(list(self.P.values()), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def train_step(self, opt, ids, tgt, meta):
        loss = self.meta_loss(ids, tgt) if meta else self.pretrain_loss(ids, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.P.values()), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())
