// Atomic file replacement: the target is either left as it was or fully replaced, never
// half-written (a crash mid-write leaves at most a stray "<path>.tmp.<pid>.<n>" file).
#pragma once
#include <cstddef>
#include <functional>
#include <ostream>
#include <string>

namespace ttt::io {

// Writes through `writer` into "<path>.tmp.<pid>.<n>" in the target's directory, flushes and
// fsyncs it, then renames it over `path` (and fsyncs the directory, best effort). If the writer
// throws, or any step fails, the temporary file is removed and std::runtime_error naming `path`
// is thrown (the writer's own exception message is included); an existing target is untouched.
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);

// Same, for a byte buffer.
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace ttt::io
