// The official TTT-E2E model configurations (github test-time-training/e2e, configs/model/<size>.yaml
// composed with configs/experiment/<size>/pretrain/pretrain-<size>-e2e.yaml and the ModelConfig
// defaults of ttt/config.py): what the released checkpoints were trained with. `ttt import
// --size` uses them.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace ttt::model {

// "125m", "350m", "760m", "1b" or "3b"; throws std::invalid_argument naming the known sizes.
ModelConfig official_config(const std::string& size);
std::vector<std::string> official_sizes();

}  // namespace ttt::model
