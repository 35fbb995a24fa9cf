"""The official TTT-E2E JAX code (github test-time-training/e2e) on XLA-CPU, for scripts/bench_compare.py.

The model is built by the official code itself: Hydra composes the official 125M experiment
(`125m/pretrain/pretrain-125m-e2e` for TTT-E2E and SWA, `125m/pretrain/pretrain-125m-fa` for full
attention) with the bench shape as overrides, `eqx.nn.make_with_state(MetaModel)` makes it, and the
timed functions are the official ones from ttt/model/loop.py:
  - prefill: `eval_step_fn` (filter_jit'ed `MetaModel.loss_for_sequence` of one sequence, the
    official evaluation; step index int32max-100 as train.py's eval mode, so the inner learning
    rate multiplier is 1);
  - gradients: `train_on_sequence` (the official train step: meta-gradient or pretrain gradient,
    global-norm clip, AdamW update), one sequence per step.
Mode: TTT-E2E = SWA blocks + prime MLPs in the last 2 blocks, train_mode meta; SWA = the same
without prime MLPs, train_mode pretrain (its chunked SWA path with b = 256); full attention =
self_attention, train_mode pretrain, mini_batch_size = T (as the official FA configs).
Attention variants (one worker process per variant; --jax-variants):
  blocked  (the default; the strongest) the calls the official code sends to cuDNN on GPUs
           (`jax.nn.dot_product_attention(implementation="cudnn")`: the whole-sequence attention
           of TTT-E2E's first L-S blocks, window W, and of full attention) run as a blocked
           attention written in jax.numpy, the way a CPU user would write it: sliding window in
           query blocks of 256 rows against their W + 256 keys (one batched product, as the
           official chunked SWA path does with its [b, W + b] mask), full causal attention in
           query blocks of 1024 against the keys up to the block's end (a static triangle, no
           T x T matrix). Same math as the XLA implementation (float32 softmax); the driver
           compares the losses of the two variants.
  xla      the same calls on XLA's own implementation of jax.nn.dot_product_attention (cuDNN
           does not exist on CPU): it materializes the [T, H, T] scores, so this variant spends
           T/W times the window's FLOPs and memory (about 33 GB at 32K; see below).
The chunked SWA path (the suffix blocks, SWA pretraining and SWA prefill: b queries against W + b
keys with a mask) is the official code unchanged in both variants: it never asked for cuDNN.
Other patches, numerically neutral: the RoPE table is enlarged to W + b rows when 2T is smaller
(scripts/official_check.py does the same). compute_dtype fp32 (the official default is bf16; the
other two columns compute in float32). `wandb` is stubbed when it is not installed (it is only
imported, never called here).
Before a prefill runs, XLA's buffer plan (memory_analysis of the compiled eval step) is compared
with the memory limit: with the xla variant, TTT-E2E's first blocks and full attention plan about
33 GB at 32K tokens (2.1 GB at 8K).
"""
import os
import sys
import types

import numpy as np

BENCH_SHAPE = dict(V=4096, d=256, L=8, H=4, f=704, W=1024, b=256, S=2)


SWA_BLOCK = 256  # query rows per block of the blocked sliding-window attention (= the official b)
FULL_BLOCK = 1024  # query rows per block of the blocked full causal attention


def blocked_attention(q, k, v, *, is_causal, local_window_size=None, scale=None):
    """Causal attention of q, k, v [T, N, hd] (or [B, T, N, hd]) in query blocks: with a window
    (local_window_size = (W - 1, 0), as the official SWA calls pass), each block of SWA_BLOCK
    queries against the W + SWA_BLOCK keys before its end, all blocks in one batched product;
    without, a static triangle of FULL_BLOCK-row blocks, each against the keys up to its end."""
    import jax
    import jax.numpy as jnp

    if q.ndim == 4:
        return jax.vmap(lambda a, b, c: blocked_attention(a, b, c, is_causal=is_causal,
                                                          local_window_size=local_window_size, scale=scale))(q, k, v)
    assert is_causal, "blocked_attention: only the causal calls of the official code"
    T, N, hd = q.shape
    scale = 1.0 / float(np.sqrt(hd)) if scale is None else scale
    W = local_window_size[0] + 1 if local_window_size is not None else None
    neg = jnp.finfo(jnp.float32).min
    if W is not None and W < T:
        B = SWA_BLOCK
        nb = -(-T // B)
        Tp = nb * B
        qp = jnp.pad(q, ((0, Tp - T), (0, 0), (0, 0))).reshape(nb, B, N, hd)
        # keys/values padded with W rows in front: block j's keys are padded rows [jB, jB + W + B)
        idx = (jnp.arange(nb) * B)[:, None] + jnp.arange(W + B)[None, :]
        kb = jnp.pad(k, ((W, Tp - T), (0, 0), (0, 0)))[idx]  # [nb, W + B, N, hd]
        vb = jnp.pad(v, ((W, Tp - T), (0, 0), (0, 0)))[idx]
        qi = (jnp.arange(nb) * B)[:, None, None] + jnp.arange(B)[None, :, None]  # absolute query positions
        ki = (jnp.arange(nb) * B - W)[:, None, None] + jnp.arange(W + B)[None, None, :]
        mask = (ki >= 0) & (ki <= qi) & (ki > qi - W)  # [nb, B, W + B]
        s = jnp.einsum("bqnh,bknh->bnqk", qp, kb) * scale
        p = jax.nn.softmax(jnp.where(mask[:, None], s, neg), axis=-1)
        o = jnp.einsum("bnqk,bknh->bqnh", p, vb).reshape(Tp, N, hd)
        return o[:T].astype(q.dtype)
    outs = []
    for s0 in range(0, T, FULL_BLOCK):
        e = min(T, s0 + FULL_BLOCK)
        s = jnp.einsum("qnh,knh->nqk", q[s0:e], k[:e]) * scale
        mask = jnp.arange(e)[None, :] <= jnp.arange(s0, e)[:, None]
        p = jax.nn.softmax(jnp.where(mask[None], s, neg), axis=-1)
        outs.append(jnp.einsum("nqk,knh->qnh", p, v[:e]))
    return jnp.concatenate(outs, 0).astype(q.dtype)


def patch_attention(variant):
    """Routes the official code's implementation="cudnn" calls: to blocked_attention (variant
    "blocked") or to XLA's implementation (variant "xla"). One variant per process (jit caches)."""
    import jax

    if getattr(jax.nn.dot_product_attention, "_bench_variant", None) is not None:
        assert jax.nn.dot_product_attention._bench_variant == variant, "one attention variant per process"
        return
    if variant not in ("blocked", "xla"):
        raise ValueError(f"unknown JAX variant {variant}")
    dpa = jax.nn.dot_product_attention

    def cpu_dpa(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False, local_window_size=None,
                implementation=None, **kw):
        if implementation == "cudnn" and variant == "blocked" and bias is None and mask is None and not kw and is_causal:
            return blocked_attention(query, key, value, is_causal=True, local_window_size=local_window_size, scale=scale)
        return dpa(query, key, value, bias, mask, scale=scale, is_causal=is_causal,
                   local_window_size=local_window_size, implementation=None, **kw)

    cpu_dpa._bench_variant = variant
    jax.nn.dot_product_attention = cpu_dpa


def self_test():
    """blocked_attention == XLA's implementation on random inputs (windowed and full)."""
    import jax
    import jax.numpy as jnp

    r = np.random.default_rng(0)
    worst = 0.0
    for T, W in ((700, 300), (600, None), (2300, None), (512, 1024)):
        q, k, v = (jnp.asarray(r.standard_normal((T, 4, 64)), jnp.float32) for _ in range(3))
        lw = (W - 1, 0) if W else None
        a = blocked_attention(q, k, v, is_causal=True, local_window_size=lw)
        b = jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=lw)
        worst = max(worst, float(jnp.abs(a - b).max()))
    return worst


def setup(official, kind, T, grad, mem_limit_gb=None, analyze_only=False, variant="blocked"):
    """Returns run() -> loss (float); run() blocks until done. For prefill, XLA's memory plan is
    read first (compiling once more): a plan above mem_limit_gb raises MemoryError instead of
    running into the limit."""
    sys.path.insert(0, os.path.abspath(official))
    try:
        import wandb  # noqa: F401
    except ImportError:
        stub = types.ModuleType("wandb")
        stub.sdk = types.ModuleType("wandb.sdk")
        stub.sdk.wandb_settings = types.ModuleType("wandb.sdk.wandb_settings")
        stub.sdk.wandb_settings.Settings = object
        sys.modules.update({"wandb": stub, "wandb.sdk": stub.sdk, "wandb.sdk.wandb_settings": stub.sdk.wandb_settings})
    import jax
    import jax.numpy as jnp
    import equinox as eqx

    patch_attention(variant)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from ttt.config import register_configs

    register_configs()
    from ttt.model.data import Batch
    from ttt.model.loop import eval_step_fn, train_on_sequence
    from ttt.model.transformer import MetaModel
    from ttt.optimizers import make_optimizer

    s = BENCH_SHAPE
    exp = "125m/pretrain/pretrain-125m-fa" if kind == "full" else "125m/pretrain/pretrain-125m-e2e"
    over = [f"model.vocab_size={s['V']}", f"model.hidden_size={s['d']}", f"model.num_hidden_layers={s['L']}",
            f"model.num_attention_heads={s['H']}", f"model.intermediate_size={s['f']}",
            f"model.sliding_window_size={s['W']}", f"training.seq_length={T}", "model.bos_token_id=0",
            "model.eos_token_id=1", "model.compute_dtype=fp32", "training.global_batch_size=1"]
    if kind == "ttt":
        over += [f"model.mini_batch_size={s['b']}", f"model.suffix_len={s['S']}"]
    elif kind == "swa":
        over += [f"model.mini_batch_size={s['b']}", "model.prime=false", "model.suffix_len=0", "training.train_mode=pretrain"]
    else:
        over += [f"model.mini_batch_size={T}", "model.suffix_len=0"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=os.path.join(os.path.abspath(official), "configs"), version_base=None):
        cfg = compose(config_name="config", overrides=[
            "+deploy=interactive", f"+experiment={exp}", "deploy_paths.data.dclm_filter_8k=/unused",
            "deploy_paths.data.books3=/unused", "training.wandb_entity=x", "training.wandb_project=x",
            "training.wandb_key=x"] + over)
    cfg.model.seq_len = max(T, cfg.model.sliding_window_size + cfg.model.mini_batch_size)
    mesh = jax.make_mesh((1, 1), ("data", "state"))
    model, state = eqx.nn.make_with_state(MetaModel)(cfg, key=jax.random.PRNGKey(0))

    rng = np.random.default_rng(T)
    toks = rng.integers(1, s["V"], size=T + 1).astype(np.int32)
    mk = lambda x: jnp.asarray(x)[None]  # noqa: E731
    seq = Batch(input_ids=mk(toks[:-1]), target_tokens=mk(toks[1:]), loss_masks=mk(toks[1:] != 0))

    if not grad:
        st = state.set(model.step_index, jnp.array(jnp.iinfo(jnp.int32).max - 100, dtype=jnp.int32))
        if mem_limit_gb is not None or analyze_only:
            with mesh:
                ma = eval_step_fn.lower(model, seq, st).compile().compiled.memory_analysis()
            need = (ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes) / 2**30
            if analyze_only:
                return need
            if need > mem_limit_gb:
                raise MemoryError(f"XLA's buffer plan needs {need:.1f} GB (temporaries, arguments, outputs), over the "
                                  f"{mem_limit_gb:.1f} GB limit; not run")

        def run():
            with mesh:
                m = eval_step_fn(model, seq, st)
            jax.block_until_ready(m)
            return float(np.mean(np.asarray(m[MetaModel.MetricType.loss])))
    else:
        batch = jax.tree.map(lambda x: x[None], seq)  # [data_parallel, batch, T]
        opt, _ = make_optimizer(cfg.training.optimizer_outer)
        box = {"model": model, "opt": opt.init(model.trainable_parameters()), "step": 0}

        def run():
            leaves, treedef = jax.tree_util.tree_flatten(state)  # a fresh copy: equinox states are single-use
            st = jax.tree_util.tree_unflatten(treedef, leaves).set(model.step_index, jnp.array(box["step"], dtype=jnp.int32))
            with mesh:
                box["model"], box["opt"], loss, metrics = train_on_sequence(st, box["model"], box["opt"], batch, cfg)
            jax.block_until_ready((box["model"], box["opt"], loss))
            box["step"] += 1
            return float(loss)
    return run


def versions():
    import jax
    import jaxlib

    return f"jax {jax.__version__}, jaxlib {jaxlib.__version__}"
