// The TTT inner step of SPEC section 3, in one place: gradient of a chunk's mean loss with
// respect to the fast weights phi, clipped to a global norm over all inner weights together,
// then phi - eta * g. Prefill, decoding sessions, the meta-learning objective and the
// rematerialized meta-gradient all call inner_step.
#pragma once
#include "autodiff/ops.h"
#include "model/model.h"

namespace ttt::e2e {

struct TTTOptions {
  bool ttt = true;        // false: keep phi_0 (no inner updates)
  double inner_lr = 1.0;  // eta
  double clip_norm = 1.0; // global-norm clip of the inner gradient
  // How sessions and prefill keep attention's window caches (model/sequence_memory.h).
  model::KvDtype kv_dtype = model::KvDtype::F32;
};

// Throws std::invalid_argument unless inner_lr is finite and >= 0 and clip_norm finite and > 0
// (a NaN or infinite inner step would silently poison every later chunk).
void validate(const TTTOptions& opt);

// phi_next = phi - eta * clip(d loss / d phi). `phi` must be part of loss's graph.
// create_graph = false: phi_next is a plain tensor (inference, the forward sweep of the
// meta-gradient). create_graph = true: phi_next carries the graph of the step itself, so that
// gradients flow through it (second order: the meta-learning objective).
model::Phi inner_step(const Tensor& loss, const model::Phi& phi, const TTTOptions& opt, bool create_graph);

}  // namespace ttt::e2e
