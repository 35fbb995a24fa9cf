// `ttt import` (and ttt.import_checkpoint in Python): an official TTT-E2E checkpoint (orbax) to a
// model directory of this engine.
//
// The checkpoint is an OCDBT store of zarr arrays; reading it is the job of the format's own
// library (tensorstore, PyPI), so scripts/ttt_import.py (the converter) does the reading and
// renaming, run by a Python that has tensorstore. import_orbax picks the config (an official size
// or a given file), runs the converter, then checks every tensor against the config exactly as
// loading a model does, and writes the model directory atomically.
#pragma once
#include <string>

#include "model/model.h"

namespace ttt::model {

struct OrbaxImport {
  std::string from, out;       // checkpoint (root, step directory or model_weights), model directory
  std::string size, config;    // exactly one: an official size, or a config.json path
  std::string python, converter;  // the interpreter with tensorstore, scripts/ttt_import.py
  std::string dtype = "f32";   // storage of model.safetensors: f32 or bf16
};

// Throws std::runtime_error with a one-line message naming the problem; an existing model in
// `out` is never overwritten. Returns the imported model.
Model import_orbax(const OrbaxImport& a);

}  // namespace ttt::model
