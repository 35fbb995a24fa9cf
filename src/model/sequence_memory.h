// Sequence memory: what a block's sequence mixer carries from one chunk (or token) to the next.
//
// Every mixer reads a chunk of tokens given the state the previous chunks left and returns the
// state after it: sliding-window attention keeps the keys and values of its last W tokens, full
// attention those of the whole context, a recurrent mixer a fixed-size state. The state is a
// flat list of tensors whose layout only the mixer knows, so that the chunk loop of test-time
// training, the rematerialized meta-gradient (which makes leaves of it and pulls adjoints back
// through it), decoding sessions (fork, reset) and the session file all handle every mixer the
// same way. One forward serves prefill, training and decoding (a decode step is a chunk of one).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autodiff/ops.h"

namespace ttt::model {

// How attention mixers keep their window caches (--kv-dtype): in the model's float type (f32,
// the default), or in bfloat16 (bf16: half the bytes, which decoding streams once per token;
// attention reads them as they are, with float32 accumulation). Other mixers ignore it.
enum class KvDtype { F32, BF16 };
// "f32" or "bf16"; anything else throws a one-line std::invalid_argument.
KvDtype parse_kv_dtype(const std::string& name);
const char* kv_dtype_name(KvDtype kv);

struct MixerState {
  std::vector<Tensor> tensors;  // empty: nothing read yet

  bool empty() const { return tensors.empty(); }
  size_t bytes() const;
  // Independent storage without graph (fork).
  MixerState deep_copy() const;
  // Contiguous, without graph, owning its rows: what a chunk boundary or a session keeps (a
  // slice would hold the whole buffer it was cut from alive).
  MixerState detached() const;
};

class SequenceMixer {
 public:
  virtual ~SequenceMixer() = default;

  // x [T, d]: the block's normalized input at positions pos0 .. pos0+T-1. `in` is the state the
  // earlier tokens left (empty at the start); `out`, if given, receives the state after this
  // chunk. Returns the mixer's output [T, d] (after its output projection). Differentiable in
  // x, in's tensors and the block's parameters.
  virtual Tensor forward(const Tensor& x, int64_t pos0, const MixerState& in, MixerState* out) const = 0;

  // The session file stores a state as one tensor per name, with the shapes it has after `pos`
  // tokens (a state whose tensors all have no elements is read back as empty).
  virtual std::vector<std::string> state_names() const = 0;
  virtual std::vector<Shape> state_shapes(int64_t pos) const = 0;
  virtual std::string describe() const = 0;  // e.g. "window 1024", for messages
  // The state before any token with caches kept as `kv` says: empty, except that a bf16 cache
  // starts as zero-row bf16 tensors (the dtype then travels with the state: forks, files).
  virtual MixerState start_state(KvDtype) const { return {}; }
  // The tensors an empty state stands for, as the session file stores them (default: zeros of
  // the shapes at position 0; a mixer whose initial state is its parameters returns copies).
  virtual std::vector<Tensor> initial_state_tensors(DType dt) const {
    std::vector<Tensor> out;
    for (const auto& s : state_shapes(0)) out.push_back(zeros(s, dt));
    return out;
  }
};

}  // namespace ttt::model
