#include "model/manifest.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ocr/errors.h"

namespace ocr {

namespace fs = std::filesystem;

Manifest read_manifest(const std::string& model_dir) {
  const fs::path dir(model_dir);
  if (!fs::is_directory(dir)) throw ModelError(model_dir + ": model folder does not exist");
  const fs::path path = dir / "manifest.json";
  if (!fs::exists(path)) {
    if (fs::exists(dir / "config.json"))
      throw ModelError(model_dir + ": this is a Hugging Face checkpoint, not an ocr-cli model folder; "
                       "convert it with: scripts/export.py " + model_dir + " OUT_DIR");
    throw ModelError(model_dir + ": no manifest.json; export a model with scripts/export.py");
  }
  nlohmann::json j;
  try {
    std::ifstream f(path);
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw ModelError(path.string() + ": not valid JSON (" + e.what() + ")");
  }
  Manifest m;
  try {
    if (j.value("format", "") != "ocr-cli-model")
      throw ModelError(path.string() + ": not an ocr-cli model manifest");
    m.format_version = j.at("format_version").get<int>();
    if (m.format_version != kManifestFormatVersion)
      throw ModelError(model_dir + ": model format version " + std::to_string(m.format_version) +
                       ", this ocr-cli reads version " + std::to_string(kManifestFormatVersion) +
                       "; re-run scripts/export.py from this ocr-cli on the Hugging Face checkpoint");
    m.dtype = j.at("dtype").get<std::string>();
    if (m.dtype != "bfloat16" && m.dtype != "float32")
      throw ModelError(path.string() + ": unsupported dtype '" + m.dtype + "'");
    const auto& d = j.at("dims");
    m.hidden = d.at("hidden").get<int64_t>();
    m.vocab = d.at("vocab").get<int64_t>();
    m.n_layers = d.at("n_layers").get<int64_t>();
    m.n_heads = d.at("n_heads").get<int64_t>();
    m.max_positions = d.at("max_positions").get<int64_t>();
    if (m.hidden <= 0 || m.vocab <= 0 || m.n_layers <= 0 || m.n_heads <= 0 || m.hidden % m.n_heads ||
        m.max_positions <= 0)
      throw ModelError(path.string() + ": impossible dims (hidden " + std::to_string(m.hidden) +
                       ", heads " + std::to_string(m.n_heads) + ", layers " + std::to_string(m.n_layers) + ")");
    m.head_dim = m.hidden / m.n_heads;
    const auto& t = j.at("special_tokens");
    m.tokens.bos = t.at("bos").get<int32_t>();
    m.tokens.eos = t.at("eos").get<int32_t>();
    m.tokens.image = t.at("image").get<int32_t>();
    m.tokens.grounding = t.at("grounding").get<int32_t>();
    m.tokens.ref_open = t.at("ref_open").get<int32_t>();
    m.tokens.ref_close = t.at("ref_close").get<int32_t>();
    m.tokens.det_open = t.at("det_open").get<int32_t>();
    m.tokens.det_close = t.at("det_close").get<int32_t>();
    m.tokens.td_open = t.at("td_open").get<int32_t>();
    m.tokens.td_close = t.at("td_close").get<int32_t>();
    for (int32_t id : {m.tokens.bos, m.tokens.eos, m.tokens.image})
      if (id < 0 || id >= m.vocab)
        throw ModelError(path.string() + ": special token id " + std::to_string(id) + " outside the vocabulary");
    const auto& img = j.at("image");
    m.patch_size = img.at("patch_size").get<int>();
    m.downsample_ratio = img.at("downsample_ratio").get<int>();
    m.min_tiles = img.at("min_tiles").get<int>();
    m.max_tiles = img.at("max_tiles").get<int>();
    for (const auto& mode : j.at("modes")) {
      ModeSpec s;
      s.name = mode.at("name").get<std::string>();
      s.base_size = mode.at("base_size").get<int>();
      s.image_size = mode.at("image_size").get<int>();
      s.crop_mode = mode.at("crop_mode").get<bool>();
      const int unit = m.patch_size * m.downsample_ratio;
      if (s.base_size <= 0 || s.image_size <= 0 || s.base_size % unit || s.image_size % unit)
        throw ModelError(path.string() + ": mode " + s.name + " has sizes not divisible by " + std::to_string(unit));
      m.modes.push_back(s);
    }
    for (auto it = j.at("files").begin(); it != j.at("files").end(); ++it)
      m.files[it.key()] = it.value().get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(path.string() + ": missing or malformed field (" + e.what() +
                     "); re-export the model with scripts/export.py");
  }
  return m;
}

}  // namespace ocr
