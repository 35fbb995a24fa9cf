// The safetensors checkpoint format (https://github.com/huggingface/safetensors):
//   8 bytes  little-endian u64 N, the header length
//   N bytes  JSON object {name: {"dtype": "F32"|"BF16"|"F64", "shape": [...],
//                                "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
//   rest     the data buffer; offsets are relative to its start, tensors row-major little-endian
//
// Reading is strict: every malformed input (truncation, bad header, bad entry, unsupported
// dtype, offsets out of range, overlapping tensors, gaps or trailing bytes in the data buffer,
// duplicate names) throws std::runtime_error with a one-line message naming the file and the
// problem. Non-finite values are data, not errors.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace ttt::io {

// Storage dtype for write_safetensors. F64 is an extension for gradient checks.
enum class StoreAs { F32, BF16, F64 };

struct TensorFile {
  std::map<std::string, ttt::Tensor> tensors;        // contiguous CPU tensors
  std::map<std::string, std::string> metadata;       // the "__metadata__" object
};

struct ReadOptions {
  // BF16 entries whose name this accepts load as BF16 tensors, bit for bit (a model's inference
  // weights, model/model.h); the others widen to F32. Empty: every BF16 entry widens.
  std::function<bool(const std::string&)> keep_bf16;
};

// F32 and BF16 entries load as F32 tensors (BF16 ones as BF16 where opt.keep_bf16 says so), F64
// entries as F64 tensors. The file is memory-mapped read-only and each tensor's pages are
// dropped from the mapping as soon as they are copied out, so loading never holds the file and
// the tensors in memory at once (peak: the tensors plus 16 MB).
TensorFile read_safetensors(const std::string& path, const ReadOptions& opt = {});
// Same, from memory. `what` names the source in error messages (normally the path).
TensorFile parse_safetensors(const uint8_t* data, size_t size, const std::string& what, const ReadOptions& opt = {});

// Writes the tensors in the given order, atomically (io/atomic_file.h). Tensors may be F32 or
// F64 and non-contiguous; BF16 rounds to nearest even (F64 inputs go through F32 first, so they
// are rounded twice). Names must be unique and not "__metadata__". The header is padded with
// spaces to a multiple of 8 bytes, as the reference implementation does.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, ttt::Tensor>>& tensors,
                       StoreAs dtype = StoreAs::F32,
                       const std::map<std::string, std::string>& metadata = {});
// The same with one storage dtype per tensor (aligned with `tensors`). BF16 tensors (inference
// weights) are accepted too: stored as BF16 they keep their bits, as F32 or F64 they widen.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, ttt::Tensor>>& tensors,
                       const std::vector<StoreAs>& dtypes,
                       const std::map<std::string, std::string>& metadata = {});

// bfloat16 conversions: round to nearest even (NaN stays NaN, quiet), and the exact widening.
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

}  // namespace ttt::io
