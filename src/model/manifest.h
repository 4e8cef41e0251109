// manifest.json of an exported model folder (written by scripts/export.py): format version,
// sizes, special-token ids, the mode table and the checksums of the module files.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ocr/preprocess.h"

namespace ocr {

constexpr int kManifestFormatVersion = 1;

struct SpecialTokens {
  int32_t bos = 0;
  int32_t eos = 1;
  int32_t image = -1;
  int32_t grounding = -1;
  int32_t ref_open = -1, ref_close = -1, det_open = -1, det_close = -1;
  int32_t td_open = -1, td_close = -1;
};

struct Manifest {
  int format_version = 0;
  std::string dtype;        // "bfloat16" or "float32"
  int64_t hidden = 0;       // LM hidden size
  int64_t vocab = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t head_dim = 0;
  int64_t max_positions = 0;
  SpecialTokens tokens;
  std::vector<ModeSpec> modes;
  int patch_size = 16;
  int downsample_ratio = 4;
  int min_tiles = 2;
  int max_tiles = 9;
  std::map<std::string, std::string> files;  // file name -> sha256
};

// Reads and validates DIR/manifest.json; throws ocr::ModelError with what to do about it.
Manifest read_manifest(const std::string& model_dir);

}  // namespace ocr
