// The per-op profiler (backend/profiler.h) and the session-memory rule of MixerState::detached.
#include <gtest/gtest.h>

#include "autodiff/ops.h"
#include "backend/profiler.h"
#include "model/sequence_memory.h"
#include "tensor/random.h"

namespace ttt::test {
namespace {

TEST(Profiler, CountsCallsTimeAndFlopsOnlyWhileEnabled) {
  Rng rng(1);
  const Tensor a = randn({8, 16}, rng, 1.0), b = randn({16, 4}, rng, 1.0);
  profile::reset();
  NoGrad ng;
  matmul(a, b);  // not profiled
  EXPECT_TRUE(profile::snapshot().empty());
  profile::enable(true);
  matmul(a, b);
  matmul(a, b);
  add(a, a);
  profile::enable(false);
  matmul(a, b);  // not profiled
  const auto ops = profile::snapshot();
  bool saw_mm = false, saw_add = false;
  for (const auto& o : ops) {
    if (o.op == "matmul gemm") {
      saw_mm = true;
      EXPECT_EQ(o.calls, 2);
      EXPECT_DOUBLE_EQ(o.flops, 2 * 2.0 * 8 * 16 * 4);
      EXPECT_GT(o.seconds, 0);
    }
    if (o.op == "binary add") {
      saw_add = true;
      EXPECT_EQ(o.calls, 1);
      EXPECT_DOUBLE_EQ(o.bytes, 3.0 * 8 * 16 * 4);
    }
  }
  EXPECT_TRUE(saw_mm);
  EXPECT_TRUE(saw_add);
  profile::by_shape(true);
  profile::reset();
  profile::enable(true);
  matmul(a, b, false, false);
  profile::enable(false);
  profile::by_shape(false);
  ASSERT_EQ(profile::snapshot().size(), 1u);
  EXPECT_EQ(profile::snapshot()[0].op, "matmul gemm 1x[8,16]x[16,4]");
}

// A state kept as a view of a much larger buffer is copied into one of its own; a view of a
// buffer at most 1.5x its size (decoding's room to append) stays shared.
TEST(MixerStateMemory, DetachedCompactsOversizedBuffers) {
  Rng rng(2);
  const Tensor big = randn({10000, 4}, rng, 1.0);
  model::MixerState s;
  s.tensors = {slice(big, 0, 9000, 10000), slice(big, 0, 2000, 10000)};
  const auto d = s.detached();
  EXPECT_NE(d.tensors[0].impl()->storage.get(), big.impl()->storage.get());  // 1000 of 10000 rows: copied
  EXPECT_EQ(d.tensors[0].to_vector(), s.tensors[0].to_vector());
  EXPECT_EQ(d.tensors[1].impl()->storage.get(), big.impl()->storage.get());  // 8000 of 10000 rows: shared
}

}  // namespace
}  // namespace ttt::test
