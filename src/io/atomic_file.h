// Atomic file replacement: the target is either left as it was or fully replaced, never
// half-written. The temporary file is created exclusively (O_EXCL | O_NOFOLLOW, a random name
// in the target's directory), so a planted file or link cannot redirect the write; leftovers of
// killed processes are removed by the next write to the same target.
#pragma once
#include <cstddef>
#include <functional>
#include <ostream>
#include <string>

namespace ttt::io {

// Writes through `writer` into "<path>.tmp.<pid>.<random>", flushes and fsyncs it, then renames
// it over `path` (and fsyncs the directory, best effort). If the writer throws, or any step
// fails, the temporary file is removed and std::runtime_error naming `path` is thrown (the
// writer's own message included); an existing target is untouched.
//
// Targets that are not regular files are never replaced: a character device or a FIFO (e.g.
// /dev/null, /dev/stdout, a pipe with a reader) is written in place, non-atomically; a symbolic
// link, directory, block device or socket is refused with an error.
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& writer);

// Same, for a byte buffer.
void write_file_atomic(const std::string& path, const void* data, size_t size);

// Removes "<base>.tmp.<pid>.<random>" files in `dir` whose process is gone (or is this process
// but not writing them now): what a kill -9 during write_file_atomic leaves behind. Returns how
// many were removed. Called by write_file_atomic for its own target; callers may sweep a whole
// directory (base empty: every such file).
size_t remove_stale_temp_files(const std::string& dir, const std::string& base = "");

// True if `name` looks like a temporary file of write_file_atomic whose writer is gone.
bool is_stale_temp_name(const std::string& name, const std::string& base = "");

}  // namespace ttt::io
