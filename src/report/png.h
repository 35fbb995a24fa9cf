// Minimal PNG encoder: 8-bit RGB, no interlacing, zlib (deflate) compressed image data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ttt::report {

// Encodes `width` x `height` pixels of 8-bit RGB (row-major, 3 bytes per pixel, rows packed with
// no padding) as a complete PNG file image: signature, IHDR, one IDAT, IEND. Each row is filtered
// with the PNG filter (None/Sub/Up/Average/Paeth) that minimises the sum of absolute residuals.
// `level` is the zlib compression level (0..9).
// Throws std::invalid_argument for non-positive or oversized dimensions, a size mismatch or a
// bad level, std::runtime_error if zlib fails.
std::vector<uint8_t> encode_png_rgb(const std::vector<uint8_t>& rgb, int width, int height, int level = 9);

// encode_png_rgb, then written atomically to `path` (temporary file + rename: an existing file is
// either replaced whole or left alone). Throws std::runtime_error if the file cannot be written.
void write_png_rgb(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height);

}  // namespace ttt::report
