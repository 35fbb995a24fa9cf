#include "model/sequence_memory.h"

#include <stdexcept>

namespace ttt::model {

KvDtype parse_kv_dtype(const std::string& name) {
  if (name == "f32") return KvDtype::F32;
  if (name == "bf16") return KvDtype::BF16;
  throw std::invalid_argument("unknown kv dtype '" + name + "' (expected f32 or bf16)");
}

const char* kv_dtype_name(KvDtype kv) { return kv == KvDtype::BF16 ? "bf16" : "f32"; }

size_t MixerState::bytes() const {
  size_t n = 0;
  for (const auto& t : tensors)
    if (t.defined()) n += static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
  return n;
}

MixerState MixerState::deep_copy() const {
  NoGrad ng;
  MixerState out;
  for (const auto& t : tensors) out.tensors.push_back(t.defined() ? clone(t.detach()) : t);
  return out;
}

MixerState MixerState::detached() const {
  NoGrad ng;
  MixerState out;
  for (const auto& t : tensors) {
    if (!t.defined()) {
      out.tensors.push_back(t);
      continue;
    }
    Tensor d = contiguous(t.detach());
    // A window kept as a view of a much larger buffer (a prefill segment's keys: the window plus
    // the segment plus room for the next one) would hold that whole buffer: copied into one of
    // its own size when the buffer exceeds 1.5x the rows kept. Decoding's buffers (the kept rows
    // plus a quarter) stay shared, so appends go on in place.
    const auto& st = d.impl()->storage;
    const double own = static_cast<double>(d.numel() * dtype_size(d.dtype()));
    if (st && static_cast<double>(st->bytes) > 1.5 * own + 4096) d = clone(d);
    out.tensors.push_back(d);
  }
  return out;
}

}  // namespace ttt::model
