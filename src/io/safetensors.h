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

// F32 and BF16 entries load as F32 tensors, F64 entries as F64 tensors.
TensorFile read_safetensors(const std::string& path);
// Same, from memory. `what` names the source in error messages (normally the path).
TensorFile parse_safetensors(const uint8_t* data, size_t size, const std::string& what);

// Writes the tensors in the given order, atomically (io/atomic_file.h). Tensors may be F32 or
// F64 and non-contiguous; BF16 rounds to nearest even (F64 inputs go through F32 first, so they
// are rounded twice). Names must be unique and not "__metadata__". The header is padded with
// spaces to a multiple of 8 bytes, as the reference implementation does.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, ttt::Tensor>>& tensors,
                       StoreAs dtype = StoreAs::F32,
                       const std::map<std::string, std::string>& metadata = {});

// bfloat16 conversions: round to nearest even (NaN stays NaN, quiet), and the exact widening.
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

}  // namespace ttt::io
