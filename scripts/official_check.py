#!/usr/bin/env python3
"""One-off equivalence check against the official TTT-E2E code (github test-time-training/e2e).

With the official modules on CPU it builds a small TTT-E2E model (the 125M E2E experiment with its
shape shrunk by Hydra overrides; float32 compute, since the official default bf16 would differ by
about 1e-2), saves it with the official Checkpointer (orbax, as training does), evaluates one
token sequence with MetaModel.loss_for_sequence (test-time training on, the eval multiplier 1)
and writes the per-position NLLs. scripts/official_check.sh then imports the checkpoint with
`ttt import`, runs `ttt eval --nll-out` on the same tokens and compares.

usage: official_check.py REPO OUT_DIR [hydra overrides...]
  REPO: a checkout of github test-time-training/e2e (its pinned environment: jax 0.5.3,
        equinox 0.12.1, optax 0.2.4, orbax-checkpoint 0.11.13, Python 3.12)
Writes OUT_DIR/ckpt (CheckpointManager root), OUT_DIR/tokens.bin (T+1 int32),
OUT_DIR/official_nll.f32 (T float32) and OUT_DIR/config.json (our format, same shape).
"""
import json
import os
import shutil
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
repo, out_dir, *extra = sys.argv[1:]
sys.path.insert(0, os.path.abspath(repo))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import equinox as eqx  # noqa: E402

# The official code asks for cuDNN attention on some paths; on CPU use XLA's (the same math).
_dpa = jax.nn.dot_product_attention
jax.nn.dot_product_attention = lambda *a, implementation=None, **k: _dpa(*a, implementation=None, **k)
from hydra import compose, initialize_config_dir  # noqa: E402
from ttt.config import TrainingConfig, register_configs  # noqa: E402

register_configs()
from ttt.infra.checkpoint import Checkpointer, unify_dict_with_eqx_module  # noqa: E402
from ttt.model.data import Batch  # noqa: E402
from ttt.model.transformer import MetaModel  # noqa: E402

V, D, L, H, F, W, B, T, S, BOS = 211, 64, 4, 4, 96, 48, 16, 128, 2, 1
shape = [f"model.vocab_size={V}", f"model.hidden_size={D}", f"model.num_hidden_layers={L}",
         f"model.num_attention_heads={H}", f"model.intermediate_size={F}", f"model.sliding_window_size={W}",
         f"model.mini_batch_size={B}", f"model.suffix_len={S}", f"training.seq_length={T}",
         f"model.bos_token_id={BOS}", "model.eos_token_id=2", "model.compute_dtype=fp32",
         # A larger initialization than 0.02 so that the predictions (and the inner steps) are far
         # from uniform and a mismatch would show.
         "model.initializer_range=0.15", "training.model_seed=3"]
os.makedirs(out_dir, exist_ok=True)
ckpt = os.path.join(os.path.abspath(out_dir), "ckpt")
shutil.rmtree(ckpt, ignore_errors=True)
with initialize_config_dir(config_dir=os.path.join(os.path.abspath(repo), "configs"), version_base=None):
    cfg = compose(config_name="config", overrides=[
        "+deploy=interactive", "+experiment=125m/pretrain/pretrain-125m-e2e",
        "deploy_paths.data.dclm_filter_8k=/unused", "deploy_paths.data.books3=/unused",
        "training.wandb_entity=x", "training.wandb_project=x", "training.wandb_key=x",
        f"checkpoint.checkpoint_dir={ckpt}", f"checkpoint.resume_checkpoint_dir={ckpt}"] + shape + extra)
cfg.model.seq_len = max(cfg.training.seq_length, cfg.model.sliding_window_size + cfg.model.mini_batch_size)
model, state = eqx.nn.make_with_state(MetaModel)(cfg, key=jax.random.PRNGKey(cfg.training.model_seed))

# Save with the official path (weights only matter here; the optimizer state is saved as training does).
import grain.python as grain  # noqa: E402
from ttt.dataloader.lm_dataset import dummy_dataset  # noqa: E402
from ttt.optimizers import make_optimizer  # noqa: E402
ds = dummy_dataset(seq_len=T, global_batch_size=1, bos_token_id=BOS, eos_token_id=2, repeat=True)
it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)))
next(it)
opt, _ = make_optimizer(cfg.training.optimizer_outer)
ck = Checkpointer(cfg, for_saving=True)
ck.save_checkpoint(step=3, model=model, opt_state=opt.init(model.trainable_parameters()), train_ds_iter=it, is_milestone=True)
ck.wait_until_finished()
ck.close()

# Restore weights only, as the official eval does, and evaluate.
rk = Checkpointer(cfg, for_saving=False)
abstract = jax.eval_shape(lambda: model.weights())
restored = rk.load_checkpoint(targets={"model_weights": abstract, "opt_state": None, "train_ds_iter": None},
                              restore=TrainingConfig.LoadPart.params)
model = unify_dict_with_eqx_module(restored["model_weights"], model)[0]
state = state.set(model.step_index, jnp.array(jnp.iinfo(jnp.int32).max - 100, dtype=jnp.int32))  # eval: multiplier 1
rng = np.random.default_rng(7)
toks = rng.integers(3, V, size=T + 1).astype("<i4")
toks[0] = BOS
toks[T // 2 + 5] = BOS  # a second document inside the sequence: a masked target
toks[-20:] = toks[10:30]  # a repeat the inner steps may learn
seq = Batch(input_ids=jnp.asarray(toks[:-1]), target_tokens=jnp.asarray(toks[1:]), loss_masks=jnp.asarray(toks[1:] != BOS))
mesh = jax.make_mesh((1, 1), ("data", "state"))
with mesh:
    loss, metrics = eqx.filter_jit(lambda m, s, st: m.loss_for_sequence(s, st))(model, seq, state)
nll = np.asarray(metrics[MetaModel.MetricType.token_nll_loss], dtype="<f4")
toks.tofile(os.path.join(out_dir, "tokens.bin"))
nll.tofile(os.path.join(out_dir, "official_nll.f32"))
ours = {"vocab_size": V, "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": H, "intermediate_size": F,
        "seq_modeling_block": "SWA", "sliding_window_size": W, "mini_batch_size": B, "prime": True, "suffix_len": S,
        "rope_theta": float(cfg.model.rope_theta), "rms_norm_eps": float(cfg.model.rms_norm_eps), "bos_token_id": BOS,
        "initializer_range": 0.15}
with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(ours, f, indent=1)
print(json.dumps({"official_loss": float(loss), "T": T, "shape": {"V": V, "d": D, "L": L, "H": H, "f": F, "W": W, "b": B, "S": S}}))
