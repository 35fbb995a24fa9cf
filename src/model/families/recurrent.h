// What the recurrent baselines (SPEC section 9) share: their mixer in every block except those
// that swa_every turns into SWA blocks (window sliding_window_size), a chunked scan of chunk_size.
#pragma once
#include <string>

#include "model/config.h"
#include "model/families/family.h"

namespace ttt::model {

class RecurrentFamily : public MixerFamily {
 public:
  bool recurrent() const override { return true; }
  bool own_mixer(const ModelConfig& c, int64_t l) const override {
    return !(c.swa_every > 0 && (l + 1) % c.swa_every == 0);
  }
  int64_t window_of(const ModelConfig& c, int64_t l) const override { return own_mixer(c, l) ? 0 : c.sliding_window_size; }
  void validate(const ModelConfig& c) const override {
    if (c.chunk_size < 1 || c.chunk_size > (int64_t{1} << 20))
      config_error("chunk_size must be in [1, 2^20] (got " + std::to_string(c.chunk_size) + ")");
    validate_own(c);
  }
  virtual void validate_own(const ModelConfig& c) const = 0;

 protected:
  static std::string swa_every_text(const ModelConfig& c) { return "SWA every " + std::to_string(c.swa_every) + "th block"; }
};

}  // namespace ttt::model
