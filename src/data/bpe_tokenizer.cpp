#include "data/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <queue>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "data/text.h"
#include "io/json_read.h"
#include "io/messages.h"

namespace ttt::data {

const char* const BpeTokenizer::kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

using json = nlohmann::json;
using io::one_line;

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();
// Ids must fit int32 with room for the special tokens; also bounds what a hostile file can make
// us allocate (a rank is checked against the number of lines before anything is sized by it).
constexpr int64_t kMaxTokens = int64_t{1} << 30;
// Pieces longer than this are merged with a heap (O(n log n)) instead of tiktoken's linear
// scan (O(n^2)); both merge the leftmost lowest-ranked pair first, so the ids are the same.
constexpr size_t kHeapMergeBytes = 128;

// The 256 special tokens llama-models gives a tiktoken rank file (llama_models/llama3/
// tokenizer.py, llama-models 0.3): these 12, then <|reserved_special_token_2|> and on.
const char* const kLlama3Specials[] = {
    "<|begin_of_text|>",       "<|end_of_text|>",  "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>",    "<|start_header_id|>",          "<|end_header_id|>",
    "<|eom_id|>",              "<|eot_id|>",       "<|python_tag|>",               "<|image|>",
};
constexpr int kLlama3NumSpecials = 256;

// GPT-2 pre-tokenizer, used by a ByteLevel pre-tokenizer with use_regex (tokenizers' byte_level.rs).
const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Unicode White_Space, which \s means in tiktoken's (Rust) and tokenizers' regex engines.
// PCRE2 10.42's \s differs (it matches U+180E, which Unicode dropped from White_Space in 6.3),
// so patterns are rewritten to this explicit class before compiling.
const char* const kWhiteSpace = R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

std::string rewrite_whitespace_classes(const std::string& pat) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pat.size(); ++i) {
    const char c = pat[i];
    if (c == '\\' && i + 1 < pat.size()) {
      const char d = pat[++i];
      if (d == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (d == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += d;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i + 1 < pat.size() && pat[i + 1] == '^') out += pat[++i];
      if (i + 1 < pat.size() && pat[i + 1] == ']') out += pat[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

std::string regex_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) o += '\\';
    o += c;
  }
  return o;
}

// 64-bit hash of a short byte string (token pieces are a few bytes): 8-byte words, multiply-xor.
inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(n) * 0xFF51AFD7ED558CCDull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = (h ^ w) * 0x94D049BB133111EBull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

// Token bytes -> id: open addressing over ids, keys compared against the id -> bytes table.
class ByteMap {
 public:
  void build(const std::vector<std::string>* keys, const std::vector<int32_t>& ids) {
    keys_ = keys;
    size_t cap = 16;
    while (cap < ids.size() * 2) cap <<= 1;
    slots_.assign(cap, Slot{0, -1});
    mask_ = cap - 1;
    for (int32_t id : ids) {
      const std::string& k = (*keys)[static_cast<size_t>(id)];
      const uint64_t h = hash_bytes(k.data(), k.size());
      size_t i = h & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = Slot{static_cast<uint32_t>(h >> 32), id};
    }
  }
  int32_t find(const char* p, size_t n) const {
    const uint64_t h = hash_bytes(p, n);
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.tag == tag) {
        const std::string& k = (*keys_)[static_cast<size_t>(s.id)];
        if (k.size() == n && std::memcmp(k.data(), p, n) == 0) return s.id;
      }
    }
  }

 private:
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  const std::vector<std::string>* keys_ = nullptr;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

struct Merge {
  uint32_t prio;
  int32_t id;
};

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
struct MatchContextDeleter {
  void operator()(pcre2_match_context* m) const { pcre2_match_context_free(m); }
};
struct JitStackDeleter {
  void operator()(pcre2_jit_stack* s) const { pcre2_jit_stack_free(s); }
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return "PCRE2 error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

// Strict base64 (RFC 4648, standard alphabet, padded); false if `s` is not.
bool base64_decode(std::string_view s, std::string& out) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(a[i])] = static_cast<int8_t>(i);
    return t;
  }();
  out.clear();
  if (s.empty() || s.size() % 4 != 0) return false;
  size_t pad = 0;
  if (s.back() == '=') pad = s[s.size() - 2] == '=' ? 2 : 1;
  for (size_t i = 0; i < s.size(); i += 4) {
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = s[i + k];
      int d;
      if (c == '=' && i + 4 == s.size() && k >= 4 - pad) d = 0;
      else if ((d = table[static_cast<unsigned char>(c)]) < 0) return false;
      v = v << 6 | static_cast<uint32_t>(d);
    }
    out += static_cast<char>(v >> 16);
    if (i + 4 < s.size() || pad < 2) out += static_cast<char>((v >> 8) & 0xff);
    if (i + 4 < s.size() || pad < 1) out += static_cast<char>(v & 0xff);
  }
  return true;
}

// Decodes one UTF-8 character of a string known to be valid (from the JSON parser).
uint32_t next_code_point(const std::string& s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t l = utf8_sequence_length(p + i, s.size() - i);
  if (l == 0) {
    ++i;
    return 0xFFFFFFFFu;
  }
  uint32_t c = l == 1 ? p[i] : l == 2 ? p[i] & 0x1Fu : l == 3 ? p[i] & 0x0Fu : p[i] & 0x07u;
  for (size_t k = 1; k < l; ++k) c = c << 6 | (p[i + k] & 0x3Fu);
  i += l;
  return c;
}

const std::array<int, 512>& unicode_to_byte_table() {
  static const auto t = [] {
    std::array<int, 512> m{};
    m.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      m[static_cast<size_t>(printable ? b : 256 + n++)] = b;
    }
    return m;
  }();
  return t;
}

}  // namespace

std::string byte_to_unicode(unsigned char b) {
  static const auto table = [] {
    std::array<std::string, 256> t;
    const auto& inv = unicode_to_byte_table();
    for (uint32_t c = 0; c < 512; ++c) {
      if (inv[c] < 0) continue;
      std::string& s = t[static_cast<size_t>(inv[c])];
      if (c < 0x80) s = std::string(1, static_cast<char>(c));
      else s = {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
    }
    return t;
  }();
  return table[b];
}

int unicode_to_byte(uint32_t c) { return c < 512 ? unicode_to_byte_table()[c] : -1; }

struct BpeTokenizer::Impl {
  Format format = Format::Tiktoken;
  std::string name;                   // "<format> <file>", for messages
  std::vector<std::string> bytes;     // id -> bytes (a special's text)
  std::vector<uint8_t> special;       // id -> 1 for special tokens
  ByteMap ordinary;                   // bytes -> id of the ordinary tokens (tiktoken: the rank)
  std::array<int32_t, 256> byte_id{}; // the single-byte tokens
  // Hugging Face merges: (left id << 32 | right id) -> (priority, merged id). Empty for tiktoken,
  // whose merge priority is the rank of the merged bytes.
  std::unordered_map<uint64_t, Merge> merges;
  bool whole_piece_lookup = true;  // a piece that is a token is emitted as is (tiktoken; HF ignore_merges)
  std::unordered_map<std::string, int32_t> specials;
  int32_t bos = -1, eos = -1;
  std::unique_ptr<pcre2_code, CodeDeleter> re;
  bool jit = false;

  void compile(const std::string& pattern);
  void finish();  // byte ids, map, checks shared by both formats
  template <class PieceFn>
  void split(std::string_view text, PieceFn&& piece) const;
  void encode_piece(const char* p, size_t n, std::vector<int32_t>& out) const;
  Merge pair(const char* base, uint32_t begin, uint32_t end, int32_t left, int32_t right) const {
    if (merges.empty()) {
      const int32_t id = ordinary.find(base + begin, end - begin);
      return {id < 0 ? kNoRank : static_cast<uint32_t>(id), id};
    }
    const auto it = merges.find(static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right));
    return it == merges.end() ? Merge{kNoRank, -1} : it->second;
  }
  template <class F>
  void merge_linear(const char* p, size_t n, F&& emit) const;
  template <class F>
  void merge_heap(const char* p, size_t n, F&& emit) const;
};

void BpeTokenizer::Impl::compile(const std::string& pattern) {
  const std::string pat = rewrite_whitespace_classes(pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  // MATCH_INVALID_UTF: text that is not valid UTF-8 is matched around (never by) the pattern,
  // instead of being refused; those bytes become pieces of their own.
  re.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(),
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr));
  if (!re)
    throw std::runtime_error(name + ": the pre-tokenizer regex does not compile (" +
                             pcre2_message(err) + " at offset " + std::to_string(off) + "): " + one_line(pattern));
  jit = pcre2_jit_compile(re.get(), PCRE2_JIT_COMPLETE) == 0;
}

// Calls piece(begin, end) for each pre-token: the regex's matches and the bytes between them
// (only invalid UTF-8 for the patterns here, which match every character).
template <class PieceFn>
void BpeTokenizer::Impl::split(std::string_view text, PieceFn&& piece) const {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(pcre2_match_data_create_from_pattern(re.get(), nullptr));
  std::unique_ptr<pcre2_match_context, MatchContextDeleter> ctx;
  std::unique_ptr<pcre2_jit_stack, JitStackDeleter> stack;
  if (!md) throw std::bad_alloc();
  size_t gap = 0, from = 0;  // unmatched bytes start at gap; the next search starts at from
  while (from < n) {
    const int rc = jit ? pcre2_jit_match(re.get(), subject, n, from, 0, md.get(), ctx.get())
                       : pcre2_match(re.get(), subject, n, from, 0, md.get(), ctx.get());
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !stack) {
      // The default 32 KiB JIT stack can run out on long runs; retry once with a larger one.
      ctx.reset(pcre2_match_context_create(nullptr));
      stack.reset(pcre2_jit_stack_create(32 << 10, 64 << 20, nullptr));
      if (!ctx || !stack) throw std::bad_alloc();
      pcre2_jit_stack_assign(ctx.get(), nullptr, stack.get());
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0)
      throw std::runtime_error(name + ": the pre-tokenizer regex failed at byte " +
                               std::to_string(from) + ": " + pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t s = ov[0], e = ov[1];
    if (e <= s) {
      // An empty match (possible with a file's own pattern) splits nothing: search on from the
      // next character, which stays in the gap.
      const size_t l = utf8_sequence_length(reinterpret_cast<const unsigned char*>(text.data()) + s, n - s);
      from = s + std::max<size_t>(l, 1);
      continue;
    }
    if (s > gap) piece(gap, s);
    piece(s, e);
    gap = from = e;
  }
  if (gap < n) piece(gap, n);
}

// tiktoken's byte-pair merge (tiktoken/src/lib.rs, _byte_pair_merge): parts start as single
// bytes; the adjacent pair with the lowest priority (leftmost on ties) is merged until none is
// left. Priority: tiktoken, the rank of the merged bytes; Hugging Face, the merge's position.
template <class F>
void BpeTokenizer::Impl::merge_linear(const char* p, size_t n, F&& emit) const {
  struct Part {
    uint32_t start;
    int32_t id;
    Merge next;  // merging this part with the following one
  };
  Part parts[kHeapMergeBytes + 1];
  size_t m = n;
  for (size_t i = 0; i < n; ++i) parts[i] = {static_cast<uint32_t>(i), byte_id[static_cast<unsigned char>(p[i])], {kNoRank, -1}};
  parts[n].start = static_cast<uint32_t>(n);
  auto end_of = [&](size_t i) { return parts[i + 1].start; };
  for (size_t i = 0; i + 1 < m; ++i) parts[i].next = pair(p, parts[i].start, end_of(i + 1), parts[i].id, parts[i + 1].id);
  for (;;) {
    size_t best = m;
    uint32_t best_prio = kNoRank;
    for (size_t i = 0; i + 1 < m; ++i)
      if (parts[i].next.prio < best_prio) best_prio = parts[best = i].next.prio;
    if (best == m) break;
    parts[best].id = parts[best].next.id;
    std::copy(parts + best + 2, parts + m + 1, parts + best + 1);  // drop part best+1 (and move the end marker)
    --m;
    parts[best].next = best + 1 < m ? pair(p, parts[best].start, end_of(best + 1), parts[best].id, parts[best + 1].id)
                                    : Merge{kNoRank, -1};
    if (best > 0) parts[best - 1].next = pair(p, parts[best - 1].start, end_of(best), parts[best - 1].id, parts[best].id);
  }
  for (size_t i = 0; i < m; ++i) emit(parts[i].id);
}

// The same merge order for long pieces (long whitespace runs, long words): a doubly linked list
// of parts and a min-heap of (priority, start) with stale entries skipped.
template <class F>
void BpeTokenizer::Impl::merge_heap(const char* p, size_t n, F&& emit) const {
  std::vector<int32_t> id(n);
  std::vector<uint32_t> next(n), prev(n), version(n, 0);
  std::vector<Merge> right(n, Merge{kNoRank, -1});  // merging part k with the part after it
  std::vector<uint8_t> alive(n, 1);
  struct Entry {
    uint32_t prio, start, version;
    bool operator>(const Entry& o) const { return prio != o.prio ? prio > o.prio : start > o.start; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  const auto N = static_cast<uint32_t>(n);
  for (uint32_t k = 0; k < N; ++k) {
    id[k] = byte_id[static_cast<unsigned char>(p[k])];
    next[k] = k + 1;
    prev[k] = k == 0 ? N : k - 1;  // N: none
  }
  auto end_of = [&](uint32_t k) { return next[k]; };  // a part ends where the next begins (or at n)
  auto update = [&](uint32_t k) {
    ++version[k];
    right[k] = next[k] < N ? pair(p, k, end_of(next[k]), id[k], id[next[k]]) : Merge{kNoRank, -1};
    if (right[k].prio != kNoRank) heap.push({right[k].prio, k, version[k]});
  };
  for (uint32_t k = 0; k < N; ++k) update(k);
  while (!heap.empty()) {
    const Entry e = heap.top();
    heap.pop();
    const uint32_t k = e.start;
    if (!alive[k] || e.version != version[k]) continue;
    const uint32_t j = next[k];
    id[k] = right[k].id;
    alive[j] = 0;
    next[k] = next[j];
    if (next[j] < N) prev[next[j]] = k;
    update(k);
    if (prev[k] < N) update(prev[k]);
  }
  for (uint32_t k = 0; k < N; k = next[k]) emit(id[k]);
}

void BpeTokenizer::Impl::encode_piece(const char* p, size_t n, std::vector<int32_t>& out) const {
  if (n == 1) {
    out.push_back(byte_id[static_cast<unsigned char>(p[0])]);
    return;
  }
  if (whole_piece_lookup) {
    const int32_t id = ordinary.find(p, n);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  auto emit = [&](int32_t id) { out.push_back(id); };
  if (n <= kHeapMergeBytes) merge_linear(p, n, emit);
  else merge_heap(p, n, emit);
}

void BpeTokenizer::Impl::finish() {
  // special: 0 ordinary, 1 special only, 2 special and also in Hugging Face's model.vocab (GPT-2's
  // <|endoftext|>), which stays a piece the merges can make.
  std::vector<int32_t> ids;
  ids.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i)
    if (special[i] != 1) ids.push_back(static_cast<int32_t>(i));
  ordinary.build(&bytes, ids);
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    byte_id[static_cast<size_t>(b)] = ordinary.find(&c, 1);
    if (byte_id[static_cast<size_t>(b)] < 0) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      throw std::runtime_error(name + ": no token for the byte " + hex +
                               " (a byte-level BPE needs all 256; the file is truncated or not byte-level)");
    }
  }
  for (size_t i = 0; i < bytes.size(); ++i)
    if (special[i]) specials.emplace(bytes[i], static_cast<int32_t>(i));
  for (auto& s : special) s = s ? 1 : 0;
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

bool BpeTokenizer::looks_like_json(std::string_view b) {
  size_t i = 0;
  if (b.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // a UTF-8 byte-order mark
  while (i < b.size() && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) ++i;
  return i < b.size() && b[i] == '{';
}

bool BpeTokenizer::looks_like_tiktoken(std::string_view b) {
  // The very first line: two fields, printable ASCII and digits. A SentencePiece model starts
  // with a protobuf tag byte 0x0A ('\n'), so it never looks like this.
  const size_t eol = std::min(b.find('\n'), b.size());
  std::string_view line = b.substr(0, eol);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const size_t sp = line.find(' ');
  if (sp == 0 || sp == std::string_view::npos) return false;
  const std::string_view tok = line.substr(0, sp), rank = line.substr(sp + 1);
  if (rank.empty() || rank.size() > 12) return false;
  for (char c : tok)
    if (c < 0x21 || c > 0x7e) return false;
  for (char c : rank)
    if (c < '0' || c > '9') return false;
  return true;
}

BpeTokenizer BpeTokenizer::from_tiktoken(std::string_view b, const std::string& name) {
  auto im = std::make_unique<Impl>();
  im->format = Format::Tiktoken;
  const std::string where = "tiktoken rank file " + one_line(name);
  im->name = where;
  auto fail = [&](size_t line, const std::string& problem) {
    throw std::runtime_error(where + (line ? ": line " + std::to_string(line) : std::string()) + ": " + problem);
  };
  // Lines end at \n, \r\n or \r; blank lines are skipped (as tiktoken's load_tiktoken_bpe does).
  std::vector<std::pair<std::string_view, size_t>> lines;  // (text, line number)
  {
    size_t i = 0, no = 0;
    while (i < b.size()) {
      size_t e = i;
      while (e < b.size() && b[e] != '\n' && b[e] != '\r') ++e;
      ++no;
      if (e > i) lines.push_back({b.substr(i, e - i), no});
      i = e < b.size() && b[e] == '\r' && e + 1 < b.size() && b[e + 1] == '\n' ? e + 2 : e + 1;
    }
  }
  if (lines.empty()) fail(0, "no tokens (the file is empty)");
  if (static_cast<int64_t>(lines.size()) > kMaxTokens) fail(0, "too many tokens (" + std::to_string(lines.size()) + ")");
  const size_t n = lines.size();
  im->bytes.assign(n + kLlama3NumSpecials, std::string());
  std::vector<uint8_t> seen(n, 0);
  std::string tok;
  for (const auto& [line, no] : lines) {
    size_t i = 0;
    std::string_view fields[3];
    int nf = 0;
    while (i < line.size() && nf < 3) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      if (i >= line.size()) break;
      size_t e = i;
      while (e < line.size() && line[e] != ' ' && line[e] != '\t') ++e;
      fields[nf++] = line.substr(i, e - i);
      i = e;
    }
    if (nf != 2) fail(no, "expected \"<base64 token> <rank>\", got \"" + one_line(std::string(line), 60) + "\"");
    if (!base64_decode(fields[0], tok)) fail(no, "bad base64 \"" + one_line(std::string(fields[0]), 60) + "\"");
    uint64_t rank = 0;
    for (char c : fields[1]) {
      if (c < '0' || c > '9' || rank > (uint64_t{1} << 40))
        fail(no, "the rank \"" + one_line(std::string(fields[1]), 30) + "\" is not a non-negative integer");
      rank = rank * 10 + static_cast<uint64_t>(c - '0');
    }
    if (rank >= n)
      fail(no, "rank " + std::to_string(rank) + " is out of range: " + std::to_string(n) +
                   " tokens need ranks 0.." + std::to_string(n - 1) + " without gaps");
    if (seen[rank]) fail(no, "duplicate rank " + std::to_string(rank));
    seen[rank] = 1;
    im->bytes[rank] = tok;
  }
  // n lines, each rank below n and none twice: every rank 0..n-1 is there.
  im->special.assign(n + kLlama3NumSpecials, 0);
  for (int k = 0; k < kLlama3NumSpecials; ++k) {
    std::string s = k < 12 ? kLlama3Specials[k] : "<|reserved_special_token_" + std::to_string(k - 12 + 2) + "|>";
    im->bytes[n + static_cast<size_t>(k)] = std::move(s);
    im->special[n + static_cast<size_t>(k)] = 1;
  }
  // Duplicate token bytes would make the id of a piece ambiguous.
  {
    std::unordered_map<std::string_view, size_t> first;
    first.reserve(n);
    for (size_t r = 0; r < n; ++r)
      if (!first.emplace(im->bytes[r], r).second)
        fail(0, "ranks " + std::to_string(first[im->bytes[r]]) + " and " + std::to_string(r) + " have the same bytes");
  }
  im->bos = static_cast<int32_t>(n);
  im->eos = static_cast<int32_t>(n + 1);
  im->compile(kLlama3Pattern);
  im->finish();
  return BpeTokenizer(std::move(im));
}

// The parts of reading a Hugging Face tokenizer.json, each one section of the file.
struct HfJsonReader {
  using Impl = BpeTokenizer::Impl;
  Impl& im;
  const json& doc;
  const std::string& where;

  [[noreturn]] void fail(const std::string& problem) const { throw std::runtime_error(where + ": " + problem); }
  const json& field(const json& obj, const char* key, const std::string& path) const {
    return io::json_field(obj, key, where + ": " + path);
  }
  std::string str(const json& v, const std::string& path) const { return io::json_string(v, where + ": " + path); }
  static bool absent(const json& obj, const char* key) { return !obj.contains(key) || obj[key].is_null(); }

  // model: a byte-level BPE without the options this engine does not implement; no normalizer.
  const json& check_model() const {
    if (!doc.is_object()) fail("expected a JSON object");
    const json& model = field(doc, "model", "model");
    if (!model.is_object()) fail("model is not an object");
    const std::string type = model.contains("type") ? str(model["type"], "model.type") : "BPE";
    if (type != "BPE") fail("unsupported model type \"" + one_line(type, 40) + "\" (only byte-level BPE is)");
    if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>())
      fail("model.byte_fallback is on: a SentencePiece-style BPE, not byte-level (give the .model file instead)");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (!absent(model, k) && !str(model[k], std::string("model.") + k).empty())
        fail(std::string("unsupported model.") + k);
    if (!absent(model, "dropout") && io::json_finite(model["dropout"], where + ": model.dropout") != 0.0)
      fail("unsupported model.dropout (BPE dropout is for training)");
    im.whole_piece_lookup = model.contains("ignore_merges") && model["ignore_merges"].is_boolean() &&
                            model["ignore_merges"].get<bool>();
    if (!absent(doc, "normalizer")) {
      const json& nz = doc["normalizer"];
      fail("unsupported normalizer" + (nz.is_object() && nz.contains("type") && nz["type"].is_string()
                                           ? " \"" + one_line(nz["type"].get<std::string>(), 40) + "\""
                                           : std::string()) + " (byte-level BPE has none)");
    }
    return model;
  }

  // Pre-tokenizer: Split(regex, Isolated) + ByteLevel(use_regex false), or ByteLevel(use_regex).
  // Returns the splitting regex.
  std::string pre_tokenizer_pattern() const {
    if (absent(doc, "pre_tokenizer")) fail("missing pre_tokenizer (a byte-level BPE needs ByteLevel)");
    const json& pt = doc["pre_tokenizer"];
    std::vector<const json*> steps;
    const std::string pt_type = str(field(pt, "type", "pre_tokenizer"), "pre_tokenizer.type");
    if (pt_type == "Sequence") {
      const json& list = field(pt, "pretokenizers", "pre_tokenizer");
      if (!list.is_array()) fail("pre_tokenizer.pretokenizers is not an array");
      for (const auto& s : list) steps.push_back(&s);
    } else {
      steps.push_back(&pt);
    }
    std::string pattern;
    bool byte_level = false;
    for (const json* s : steps) {
      const std::string t = str(field(*s, "type", "pre_tokenizer step"), "pre_tokenizer step type");
      if (t == "Split" && !byte_level && pattern.empty()) {
        pattern = split_pattern(*s);
      } else if (t == "ByteLevel" && !byte_level) {
        byte_level = true;
        if (s->contains("add_prefix_space") && (*s)["add_prefix_space"].is_boolean() && (*s)["add_prefix_space"].get<bool>())
          fail("unsupported ByteLevel add_prefix_space");
        const bool use_regex = !s->contains("use_regex") || !(*s)["use_regex"].is_boolean() || (*s)["use_regex"].get<bool>();
        if (use_regex) {
          if (!pattern.empty()) fail("unsupported pre_tokenizer: a Split and ByteLevel's own regex");
          pattern = kGpt2Pattern;
        }
      } else {
        fail("unsupported pre_tokenizer step \"" + one_line(t, 40) + "\" (supported: Split then ByteLevel, or ByteLevel)");
      }
    }
    if (!byte_level) fail("the pre_tokenizer has no ByteLevel step: not a byte-level BPE");
    if (pattern.empty()) fail("the pre_tokenizer splits nothing (ByteLevel with use_regex false and no Split)");
    return pattern;
  }

  std::string split_pattern(const json& s) const {
    std::string pattern;
    const json& pat = field(s, "pattern", "Split");
    if (pat.is_object() && pat.contains("Regex")) pattern = str(pat["Regex"], "Split.pattern.Regex");
    else if (pat.is_object() && pat.contains("String")) pattern = regex_escape(str(pat["String"], "Split.pattern.String"));
    else fail("Split.pattern is neither {\"Regex\": ...} nor {\"String\": ...}");
    const std::string behavior = s.contains("behavior") ? str(s["behavior"], "Split.behavior") : "Isolated";
    if (behavior != "Isolated") fail("unsupported Split behavior \"" + one_line(behavior, 40) + "\" (only Isolated)");
    if (s.contains("invert") && s["invert"].is_boolean() && s["invert"].get<bool>()) fail("unsupported Split with invert");
    if (pattern.empty()) fail("Split.pattern is empty");
    return pattern;
  }

  // A byte-level string (GPT-2's byte-to-unicode alphabet) as its bytes; what() names the entry.
  std::string byte_level(const std::string& s, const std::function<std::string()>& what) const {
    std::string bytes;
    for (size_t i = 0; i < s.size();) {
      const int byte = unicode_to_byte(next_code_point(s, i));
      if (byte < 0) fail(what());
      bytes += static_cast<char>(byte);
    }
    return bytes;
  }

  // Vocabulary: byte-level strings -> ids, then added tokens; ids 0..V-1 without gaps, no two
  // tokens with the same bytes.
  void read_vocab(const json& model) const {
    const json& vocab = field(model, "vocab", "model");
    if (!vocab.is_object()) fail("model.vocab is not an object");
    const json added = doc.contains("added_tokens") && !doc["added_tokens"].is_null() ? doc["added_tokens"] : json::array();
    if (!added.is_array()) fail("added_tokens is not an array");
    const int64_t entries = static_cast<int64_t>(vocab.size() + added.size());
    if (entries == 0) fail("model.vocab is empty");
    if (entries > kMaxTokens) fail("too many tokens (" + std::to_string(entries) + ")");
    std::vector<std::pair<int64_t, std::string>> items;  // (id, bytes) of model.vocab
    items.reserve(vocab.size());
    int64_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const std::string& s = it.key();
      const int64_t id = io::json_int(it.value(), 0, kMaxTokens, where + ": model.vocab[\"" + one_line(s, 40) + "\"]");
      std::string bytes = byte_level(s, [&] {
        return "model.vocab entry \"" + one_line(s, 40) + "\" is not a byte-level string (GPT-2 byte-to-unicode alphabet)";
      });
      if (bytes.empty()) fail("model.vocab has an empty token");
      max_id = std::max(max_id, id);
      items.push_back({id, std::move(bytes)});
    }
    std::vector<std::pair<int64_t, std::string>> adds;
    for (size_t k = 0; k < added.size(); ++k) {
      const std::string p = "added_tokens[" + std::to_string(k) + "]";
      const int64_t id = io::json_int(field(added[k], "id", p), 0, kMaxTokens, where + ": " + p + ".id");
      std::string content = str(field(added[k], "content", p), p + ".content");
      if (content.empty()) fail(p + " has empty content");
      max_id = std::max(max_id, id);
      adds.push_back({id, std::move(content)});
    }
    // Ids must be 0..V-1 without gaps; checked against the entry count before sizing anything.
    if (max_id >= entries) fail("id " + std::to_string(max_id) + " is out of range: ids must be 0..V-1 without gaps");
    place_tokens(static_cast<size_t>(max_id + 1), items, adds);
  }

  void place_tokens(size_t V, std::vector<std::pair<int64_t, std::string>>& items,
                    std::vector<std::pair<int64_t, std::string>>& adds) const {
    im.bytes.assign(V, std::string());
    im.special.assign(V, 0);
    std::vector<uint8_t> in_vocab(V, 0);
    for (auto& [id, bytes] : items) {
      if (in_vocab[static_cast<size_t>(id)]) fail("id " + std::to_string(id) + " appears twice in model.vocab");
      in_vocab[static_cast<size_t>(id)] = 1;
      im.bytes[static_cast<size_t>(id)] = std::move(bytes);
    }
    for (auto& [id, content] : adds) {
      const auto i = static_cast<size_t>(id);
      if (im.special[i]) fail("id " + std::to_string(id) + " appears twice in added_tokens");
      if (in_vocab[i] && im.bytes[i] != content)
        fail("added token \"" + one_line(content, 40) + "\" has id " + std::to_string(id) + ", which model.vocab gives to another token");
      // 2: special and in model.vocab (GPT-2's <|endoftext|>): a piece the merges may still make.
      im.special[i] = in_vocab[i] ? 2 : 1;
      im.bytes[i] = std::move(content);
    }
    for (size_t i = 0; i < V; ++i)
      if (!in_vocab[i] && !im.special[i]) fail("no token has id " + std::to_string(i) + ": ids must be 0..V-1 without gaps");
    std::unordered_map<std::string_view, size_t> first;
    for (size_t i = 0; i < V; ++i)
      if (im.special[i] != 1 && !first.emplace(im.bytes[i], i).second)
        fail("ids " + std::to_string(first[im.bytes[i]]) + " and " + std::to_string(i) + " have the same bytes");
    std::unordered_map<std::string_view, size_t> specials;
    for (size_t i = 0; i < V; ++i)
      if (im.special[i] && !specials.emplace(im.bytes[i], i).second)
        fail("added token \"" + one_line(im.bytes[i], 40) + "\" appears twice");
  }

  // Merges: "a b" strings or [a, b] pairs; priority = position. A pair listed twice keeps its
  // last position, as tokenizers' BPE builder (a HashMap collect) does.
  void read_merges(const json& model) const {
    const json& merges = field(model, "merges", "model");
    if (!merges.is_array()) fail("model.merges is not an array");
    im.merges.reserve(merges.size());
    for (size_t k = 0; k < merges.size(); ++k) {
      std::string a, c;
      const json& m = merges[k];
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
          fail("model.merges[" + std::to_string(k) + "] \"" + one_line(s, 60) + "\" is not two tokens separated by a space");
        a = s.substr(0, sp);
        c = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        c = m[1].get<std::string>();
      } else {
        fail("model.merges[" + std::to_string(k) + "] is neither \"a b\" nor [\"a\", \"b\"]");
      }
      add_merge(k, a, c);
    }
    if (im.merges.empty() && im.bytes.size() > 256) fail("model.merges is empty");
  }

  void add_merge(size_t k, const std::string& a, const std::string& c) const {
    auto bytes_of = [&](const std::string& s) {
      return byte_level(s, [&] {
        return "model.merges[" + std::to_string(k) + "]: \"" + one_line(s, 40) + "\" is not a byte-level string";
      });
    };
    const std::string left = bytes_of(a), right = bytes_of(c);
    const int32_t l = im.ordinary.find(left.data(), left.size()), r = im.ordinary.find(right.data(), right.size());
    const std::string both = left + right;
    const int32_t id = im.ordinary.find(both.data(), both.size());
    if (l < 0 || r < 0 || id < 0)
      fail("model.merges[" + std::to_string(k) + "] (\"" + one_line(a, 30) + "\" \"" + one_line(c, 30) +
           "\"): " + (l < 0 ? "the first token" : r < 0 ? "the second token" : "the merged token") + " is not in model.vocab");
    im.merges[static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32 | static_cast<uint32_t>(r)] =
        Merge{static_cast<uint32_t>(k), id};
  }

  // BOS: the first special token of the post-processor's template (what tokenizers prepends),
  // else a usual name; EOS by name.
  void find_bos_eos() const {
    auto special_named = [&](const std::string& s) {
      const auto it = im.specials.find(s);
      return it == im.specials.end() ? -1 : it->second;
    };
    std::function<void(const json&)> find_template = [&](const json& pp) {
      if (im.bos >= 0 || !pp.is_object() || !pp.contains("type") || !pp["type"].is_string()) return;
      const std::string t = pp["type"].get<std::string>();
      if (t == "Sequence" && pp.contains("processors") && pp["processors"].is_array()) {
        for (const auto& p : pp["processors"]) find_template(p);
      } else if (t == "TemplateProcessing" && pp.contains("single") && pp["single"].is_array() && !pp["single"].empty()) {
        const json& first = pp["single"][0];
        if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
            first["SpecialToken"].contains("id") && first["SpecialToken"]["id"].is_string())
          im.bos = special_named(first["SpecialToken"]["id"].get<std::string>());
      }
    };
    if (doc.contains("post_processor")) find_template(doc["post_processor"]);
    for (const char* s : {"<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>", "<|endoftext|>"})
      if (im.bos < 0) im.bos = special_named(s);
    for (const char* s : {"<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>"})
      if (im.eos < 0) im.eos = special_named(s);
  }
};

BpeTokenizer BpeTokenizer::from_hf_json(std::string_view b, const std::string& name) {
  auto im = std::make_unique<Impl>();
  im->format = Format::HuggingFace;
  const std::string where = "tokenizer.json " + one_line(name);
  im->name = where;
  if (b.substr(0, 3) == "\xEF\xBB\xBF") b.remove_prefix(3);
  const json doc = io::parse_json(b, where);
  const HfJsonReader r{*im, doc, where};
  const json& model = r.check_model();
  const std::string pattern = r.pre_tokenizer_pattern();
  r.read_vocab(model);
  im->compile(pattern);
  im->finish();
  r.read_merges(model);
  r.find_bos_eos();
  return BpeTokenizer(std::move(im));
}

void BpeTokenizer::encode_append(std::string_view text, std::vector<int32_t>& out, size_t max_out) const {
  const Impl& im = *impl_;
  im.split(text, [&](size_t begin, size_t end) {
    im.encode_piece(text.data() + begin, end - begin, out);
    if (out.size() > max_out)
      throw std::length_error("the text encodes to more than " + std::to_string(max_out) + " tokens");
  });
}

std::vector<std::string_view> BpeTokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string_view> out;
  impl_->split(text, [&](size_t begin, size_t end) { out.push_back(text.substr(begin, end - begin)); });
  return out;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 4 + 4);
  encode_append(text, out);
  return out;
}

std::string BpeTokenizer::decode(const int32_t* ids, size_t n) const {
  std::string o;
  const auto V = static_cast<int32_t>(impl_->bytes.size());
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= V)
      throw std::invalid_argument("token " + std::to_string(i) + " has id " + std::to_string(ids[i]) +
                                  ", outside the tokenizer's vocabulary [0, " + std::to_string(V) + ")");
    o += impl_->bytes[static_cast<size_t>(ids[i])];
  }
  return o;
}

BpeTokenizer::Format BpeTokenizer::format() const { return impl_->format; }
int32_t BpeTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->bytes.size()); }
int32_t BpeTokenizer::bos_id() const { return impl_->bos; }
int32_t BpeTokenizer::eos_id() const { return impl_->eos; }
bool BpeTokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && impl_->special[static_cast<size_t>(id)]; }

const std::string& BpeTokenizer::piece_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                std::to_string(vocab_size()) + ")");
  return impl_->bytes[static_cast<size_t>(id)];
}

std::string BpeTokenizer::piece(int32_t id) const {
  const std::string& b = piece_bytes(id);
  if (impl_->special[static_cast<size_t>(id)]) return b;
  std::string s;
  for (char c : b) s += byte_to_unicode(static_cast<unsigned char>(c));
  return s;
}

int32_t BpeTokenizer::special_id(std::string_view text) const {
  const auto it = impl_->specials.find(std::string(text));
  return it == impl_->specials.end() ? -1 : it->second;
}

}  // namespace ttt::data
