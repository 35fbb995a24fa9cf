// Differentiable tensor ops. Each validates its arguments (std::invalid_argument naming the
// problem), computes through the device backend and, when grad mode is on and an input requires
// grad, records a node whose backward is written with these same ops (exact higher derivatives).
#pragma once
#include <cstdint>
#include <vector>

#include "autodiff/graph.h"
#include "backend/attention_shape.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ttt {

// ---- creation (never recorded), on a device (the CPU unless named) ----
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu());
Tensor zeros_like(const Tensor& x);  // same shape, dtype and device
Tensor ones_like(const Tensor& x);
// Host values, rounded to dtype on the host and copied to the device once.
Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::F32,
                   Device device = Device::cpu());
Tensor randn(const Shape& shape, Rng& rng, double stddev = 1.0, DType dtype = DType::F32,
             Device device = Device::cpu());
Tensor uniform(const Shape& shape, Rng& rng, double lo, double hi, DType dtype = DType::F32,
               Device device = Device::cpu());
Tensor to_dtype(const Tensor& x, DType dtype);  // differentiable
Tensor clone(const Tensor& x);                  // differentiable copy, contiguous
// A contiguous copy on another device (x itself when already there); cut from the graph.
Tensor to_device(const Tensor& x, Device device);
// dst = src in place (same shape, dtype and device; never recorded): loading weights into live
// parameters, an optimizer's update of a view.
void assign(const Tensor& dst, const Tensor& src);
// Elements of x that are not finite (and, with negative_too, below zero): the checks of loaded
// weights, states and optimizer moments, run where the tensor lives.
int64_t count_nonfinite(const Tensor& x, bool negative_too = false);

// ---- views and layout ----
Tensor contiguous(const Tensor& x);
Tensor reshape(const Tensor& x, Shape shape);  // one extent may be -1
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);  // [start, end)
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// The last `keep` rows (all when keep <= 0) of concat({cache, rows}, 0): a cache growing by
// appends. Without a graph, appends go in place into spare room at the end of the cache's buffer
// when nothing was appended there since (decoding with a window cache then costs O(new rows),
// not a copy of the whole cache per token); otherwise the rows are copied into a new buffer with
// spare room (a quarter more for one-row appends, one more append's worth for bulk ones).
// Earlier views of the buffer never change. With a graph: concat + slice, except where the cache
// is a constant whose buffer already holds exactly these rows after it (appended there before):
// then a view over them, the gradient going to `rows` alone.
Tensor append_rows(const Tensor& cache, const Tensor& rows, int64_t keep);
// `old`'s rows as a view into `now`'s buffer when that buffer holds them bit for bit, `gap` rows
// before now's last `gap` rows (a window cache's state at a chunk's start, found again in the
// buffer the chunk's appends moved to, so the old buffer can go); else `old` itself.
Tensor same_rows_in(const Tensor& old, const Tensor& now, int64_t gap);
Tensor broadcast_to(const Tensor& x, const Shape& shape);
Tensor sum_to(const Tensor& x, const Shape& shape);  // inverse of broadcast_to

// ---- elementwise (numpy broadcasting) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor maximum_scalar(const Tensor& x, double s);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor reciprocal(const Tensor& x);
Tensor square(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);
// silu(a) * b for a and b of one shape (SwiGLU's gate) in one pass, with a one-pass backward.
Tensor silu_mul(const Tensor& a, const Tensor& b);
Tensor softplus(const Tensor& x);  // log(1 + e^x), stable for large |x|
// (I + L)^-1 for L [..., n, n] strictly lower triangular (entries on and above the diagonal are
// ignored): the UT transform of the chunked delta rule. Forward substitution, stable where the
// Neumann series (I - L)(I + L^2)... loses every digit once keys align.
Tensor unit_lower_inverse(const Tensor& l);
// cs [..., n] -> [..., n, n]: exp(cs_i - cs_j) where j <= i, 0 above the diagonal. The decay
// matrix of a chunked linear recurrence (cs = cumulative log decays, non-increasing), in one pass
// instead of a subtract, mask, exp and multiply over the whole [n, n] block.
Tensor causal_decay(const Tensor& cs);
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

// ---- reductions ----
Tensor sum(const Tensor& x);  // 0-d result
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);

// ---- linear algebra ----
// op(a) @ op(b). a is [..., m, k] (leading dims flattened when !trans_a and b is 2-D), or a
// batch [B, m, k] with b [B, k, n]. Transposes apply to the last two dims.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// ---- model ops ----
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps);  // over the last dim
Tensor rms_rstd(const Tensor& x, double eps);                       // 1/sqrt(mean(x^2)+eps), keepdim
// x [T, H, D], D even; position of row t is pos0 + t; interleaved pairs (SPEC section 2).
Tensor rope(const Tensor& x, int64_t pos0, double theta, bool inverse = false);
Tensor softmax(const Tensor& x);  // over the last dim
// Scores [H, Tq, Tk] -> probabilities; invisible keys (kernels/attention.h rule) get 0.
Tensor masked_softmax(const Tensor& scores, const AttentionShape& s);
// Per-row negative log-likelihood of targets: logits [R, V] -> [R].
Tensor cross_entropy(const Tensor& logits, const std::vector<int32_t>& targets);
// cross_entropy(x w^T) (w [V, d]; with w_transposed, w is [d, V] and the logits are x w) without
// ever holding the [T, V] logits: rows go through in blocks small enough that a block of logits
// stays under a few tens of MB (a 128K vocabulary at long context), in the forward and, by
// recomputing each block, in the first-order backward (unless all blocks together fit 32M
// logits: then the forward's blocks are kept for it). A backward that must itself be
// differentiated (create_graph) falls back to the plain composition. A frozen bf16 head
// (inference weights) computes the input gradient per row in the forward instead, while each
// block's logits are at hand, and keeps only that ([T, d]): no recomputation, one block alive.
// block_rows > 0 sets the rows per block (tests); 0 chooses about 8M logits per block.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& w, const std::vector<int32_t>& targets,
                            bool w_transposed = false, int64_t block_rows = 0);
Tensor onehot_sub(const Tensor& x, const std::vector<int32_t>& targets);  // x - onehot
Tensor embedding(const Tensor& table, const std::vector<int32_t>& ids);  // [V, d] -> [R, d]
Tensor scatter_add_rows(const Tensor& rows, const std::vector<int32_t>& ids, int64_t num_rows);

struct AttentionOptions {
  int64_t q_pos0 = 0, k_pos0 = 0, window = 0;  // see kernels/attention.h
  // Keys before this row are constants whose gradient nobody needs (a detached cache): a
  // first-order backward leaves their dk, dv zero instead of computing them. Only a hint: a
  // backward that is differentiated again computes every row.
  int64_t k_grad_from = 0;
  // The model computes in bf16 (`--compute bf16`): a forward that records no graph may run with
  // bf16 products (AttentionShape::bf16_products).
  bool bf16_products = false;
};
// q [Tq, H, D], k and v [Tk, H, D] -> [Tq, H, D]; scale 1/sqrt(D). Fused tiled kernel forward;
// first-order backward through the fused backward kernel; with create_graph the backward is
// re-derived from attention_composite so second derivatives are exact.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt);
// attention(q, [k_cache; k], [v_cache; v], opt) with a window cache kept in bfloat16 (--kv-dtype
// bf16): k_cache, v_cache [Tc, H, D] BF16 are read as they are (never widened as a whole; a
// constant: no gradient flows to them), k, v [Tn, H, D] and q float32; opt.k_pos0 is the position
// of the cache's first row. Gradients reach q, k and v in float32 (first order through the
// fused kernel; a gradient that is differentiated again goes through attention on the widened
// keys).
Tensor attention_bf16_cache(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                            const Tensor& v, const AttentionOptions& opt);
// The same function built from matmul and masked_softmax (materializes [H, Tq, Tk]).
Tensor attention_composite(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt);

// ---- optimization helpers ----
Tensor global_norm(const std::vector<Tensor>& xs);  // sqrt(sum of all squares), 0-d
// g * min(1, max_norm / ||g||) over all tensors together (differentiable).
std::vector<Tensor> clip_by_global_norm(const std::vector<Tensor>& gs, double max_norm);

// Checks used by ops and the model: throw std::invalid_argument with `what` in the message.
void check_same_dtype(const Tensor& a, const Tensor& b, const char* what);

}  // namespace ttt
