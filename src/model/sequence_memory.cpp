#include "model/sequence_memory.h"

namespace ttt::model {

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
  for (const auto& t : tensors) out.tensors.push_back(t.defined() ? contiguous(t.detach()) : t);
  return out;
}

}  // namespace ttt::model
