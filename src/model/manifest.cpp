#include "model/manifest.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "ocr/errors.h"

namespace ocr {

namespace fs = std::filesystem;

namespace {

// An integer field, range-checked before the conversion: get<int>() would truncate 2.5 to 2 and
// convert 1e300 with undefined behaviour (found with tests/fuzz).
template <typename T>
T int_field(const nlohmann::json& obj, const char* key, const std::string& where) {
  const nlohmann::json& v = obj.at(key);
  constexpr int64_t kMin = std::numeric_limits<T>::min();
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<T>::max());
  bool ok = false;
  if (v.is_number_unsigned()) {
    ok = v.get<uint64_t>() <= kMax;
  } else if (v.is_number_integer()) {
    ok = v.get<int64_t>() >= kMin && v.get<int64_t>() <= static_cast<int64_t>(kMax);
  }
  if (!ok)
    throw ModelError(where + ": field \"" + key + "\" is " +
                     (v.is_number() ? v.dump() : std::string(v.type_name())) +
                     ", expected an integer of at most " + std::to_string(kMax) +
                     "; re-export the model with scripts/export.py");
  return static_cast<T>(v.get<int64_t>());
}

}  // namespace

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
    m.format_version = int_field<int>(j, "format_version", path.string());
    if (m.format_version != kManifestFormatVersion)
      throw ModelError(model_dir + ": model format version " + std::to_string(m.format_version) +
                       ", this ocr-cli reads version " + std::to_string(kManifestFormatVersion) +
                       "; re-run scripts/export.py from this ocr-cli on the Hugging Face checkpoint");
    m.dtype = j.at("dtype").get<std::string>();
    if (m.dtype != "bfloat16" && m.dtype != "float32")
      throw ModelError(path.string() + ": unsupported dtype '" + m.dtype + "'");
    const auto& d = j.at("dims");
    m.hidden = int_field<int64_t>(d, "hidden", path.string());
    m.vocab = int_field<int64_t>(d, "vocab", path.string());
    m.n_layers = int_field<int64_t>(d, "n_layers", path.string());
    m.n_heads = int_field<int64_t>(d, "n_heads", path.string());
    m.max_positions = int_field<int64_t>(d, "max_positions", path.string());
    if (m.hidden <= 0 || m.vocab <= 0 || m.n_layers <= 0 || m.n_heads <= 0 || m.hidden % m.n_heads ||
        m.max_positions <= 0)
      throw ModelError(path.string() + ": impossible dims (hidden " + std::to_string(m.hidden) +
                       ", heads " + std::to_string(m.n_heads) + ", layers " + std::to_string(m.n_layers) + ")");
    m.head_dim = m.hidden / m.n_heads;
    const auto& t = j.at("special_tokens");
    m.tokens.bos = int_field<int32_t>(t, "bos", path.string());
    m.tokens.eos = int_field<int32_t>(t, "eos", path.string());
    m.tokens.image = int_field<int32_t>(t, "image", path.string());
    m.tokens.grounding = int_field<int32_t>(t, "grounding", path.string());
    m.tokens.ref_open = int_field<int32_t>(t, "ref_open", path.string());
    m.tokens.ref_close = int_field<int32_t>(t, "ref_close", path.string());
    m.tokens.det_open = int_field<int32_t>(t, "det_open", path.string());
    m.tokens.det_close = int_field<int32_t>(t, "det_close", path.string());
    m.tokens.td_open = int_field<int32_t>(t, "td_open", path.string());
    m.tokens.td_close = int_field<int32_t>(t, "td_close", path.string());
    for (int32_t id : {m.tokens.bos, m.tokens.eos, m.tokens.image})
      if (id < 0 || id >= m.vocab)
        throw ModelError(path.string() + ": special token id " + std::to_string(id) + " outside the vocabulary");
    const auto& img = j.at("image");
    m.patch_size = int_field<int>(img, "patch_size", path.string());
    m.downsample_ratio = int_field<int>(img, "downsample_ratio", path.string());
    m.min_tiles = int_field<int>(img, "min_tiles", path.string());
    m.max_tiles = int_field<int>(img, "max_tiles", path.string());
    // Sizes the preprocessing divides by and the tile range it enumerates (found by fuzzing:
    // patch_size 0 divided by zero below).
    if (m.patch_size <= 0 || m.downsample_ratio <= 0 || m.patch_size > 4096 ||
        m.downsample_ratio > 4096)
      throw ModelError(path.string() + ": impossible image sizes (patch_size " +
                       std::to_string(m.patch_size) + ", downsample_ratio " +
                       std::to_string(m.downsample_ratio) + ")");
    if (m.min_tiles < 1 || m.max_tiles < m.min_tiles)
      throw ModelError(path.string() + ": impossible tile range (min_tiles " +
                       std::to_string(m.min_tiles) + ", max_tiles " + std::to_string(m.max_tiles) +
                       ")");
    for (const auto& mode : j.at("modes")) {
      ModeSpec s;
      s.name = mode.at("name").get<std::string>();
      s.base_size = int_field<int>(mode, "base_size", path.string());
      s.image_size = int_field<int>(mode, "image_size", path.string());
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
