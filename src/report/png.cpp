#include "report/png.h"

#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "io/atomic_file.h"

namespace ttt::report {
namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
constexpr int kMaxDim = 1 << 15;  // far more than any chart needs; keeps sizes well inside 32 bits

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

// Appends length, type, data and the CRC-32 of type + data.
void put_chunk(std::vector<uint8_t>& out, const char type[4], const uint8_t* data, size_t size) {
  put_u32(out, static_cast<uint32_t>(size));
  const size_t type_at = out.size();
  out.insert(out.end(), type, type + 4);
  if (size > 0) out.insert(out.end(), data, data + size);
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, out.data() + type_at, static_cast<uInt>(4 + size));
  put_u32(out, static_cast<uint32_t>(crc));
}

inline uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c;
  const int pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return static_cast<uint8_t>(a);
  if (pb <= pc) return static_cast<uint8_t>(b);
  return static_cast<uint8_t>(c);
}

// Filters one row with filter `type` into `out` (row bytes only, no filter byte).
void filter_row(int type, const uint8_t* cur, const uint8_t* prev, size_t n, uint8_t* out) {
  constexpr size_t bpp = 3;
  for (size_t i = 0; i < n; ++i) {
    const int a = i >= bpp ? cur[i - bpp] : 0;
    const int b = prev ? prev[i] : 0;
    const int c = (prev && i >= bpp) ? prev[i - bpp] : 0;
    int pred = 0;
    switch (type) {
      case 0: pred = 0; break;
      case 1: pred = a; break;
      case 2: pred = b; break;
      case 3: pred = (a + b) / 2; break;
      default: pred = paeth(a, b, c); break;
    }
    out[i] = static_cast<uint8_t>(cur[i] - pred);
  }
}

// The usual heuristic: residuals read as signed bytes, smallest sum of magnitudes wins.
uint64_t residual_cost(const uint8_t* r, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += static_cast<uint64_t>(std::abs(static_cast<int>(static_cast<int8_t>(r[i]))));
  return s;
}

}  // namespace

std::vector<uint8_t> encode_png_rgb(const std::vector<uint8_t>& rgb, int width, int height, int level) {
  if (width <= 0 || height <= 0 || width > kMaxDim || height > kMaxDim)
    throw std::invalid_argument("PNG dimensions must be in 1.." + std::to_string(kMaxDim) + ", got " +
                                std::to_string(width) + "x" + std::to_string(height));
  if (level < 0 || level > 9) throw std::invalid_argument("zlib level must be in 0..9, got " + std::to_string(level));
  const size_t row_bytes = static_cast<size_t>(width) * 3;
  if (rgb.size() != row_bytes * static_cast<size_t>(height))
    throw std::invalid_argument("PNG pixel buffer has " + std::to_string(rgb.size()) + " bytes, expected " +
                                std::to_string(row_bytes * static_cast<size_t>(height)) + " for " +
                                std::to_string(width) + "x" + std::to_string(height) + " RGB");

  // Filtered scanlines: one filter-type byte, then the row.
  std::vector<uint8_t> raw((row_bytes + 1) * static_cast<size_t>(height));
  std::vector<uint8_t> trial(row_bytes), best(row_bytes);
  for (int y = 0; y < height; ++y) {
    const uint8_t* cur = rgb.data() + row_bytes * static_cast<size_t>(y);
    const uint8_t* prev = y > 0 ? cur - row_bytes : nullptr;
    int best_type = 0;
    uint64_t best_cost = UINT64_MAX;
    for (int type = 0; type <= 4; ++type) {
      filter_row(type, cur, prev, row_bytes, trial.data());
      const uint64_t cost = residual_cost(trial.data(), row_bytes);
      if (cost < best_cost) {
        best_cost = cost;
        best_type = type;
        best.swap(trial);
      }
    }
    uint8_t* dst = raw.data() + (row_bytes + 1) * static_cast<size_t>(y);
    dst[0] = static_cast<uint8_t>(best_type);
    std::copy(best.begin(), best.end(), dst + 1);
  }

  uLongf zsize = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> z(zsize);
  const int rc = compress2(z.data(), &zsize, raw.data(), static_cast<uLong>(raw.size()), level);
  if (rc != Z_OK) throw std::runtime_error("zlib compress2 failed with code " + std::to_string(rc));
  z.resize(zsize);

  std::vector<uint8_t> out(kSignature, kSignature + 8);
  out.reserve(8 + 25 + 12 + z.size() + 12);
  std::vector<uint8_t> ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr.push_back(8);  // bit depth
  ihdr.push_back(2);  // colour type: truecolour (RGB)
  ihdr.push_back(0);  // compression: deflate
  ihdr.push_back(0);  // filter method: adaptive
  ihdr.push_back(0);  // no interlace
  put_chunk(out, "IHDR", ihdr.data(), ihdr.size());
  put_chunk(out, "IDAT", z.data(), z.size());
  put_chunk(out, "IEND", nullptr, 0);
  return out;
}

void write_png_rgb(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height) {
  const std::vector<uint8_t> png = encode_png_rgb(rgb, width, height);
  io::write_file_atomic(path, png.data(), png.size());
}

}  // namespace ttt::report
