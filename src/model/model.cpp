#include "model/model.h"

#include <c10/util/BFloat16.h>
#include <ATen/Context.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>

#include <filesystem>

#include "model/sha256.h"
#include "ocr/errors.h"

extern "C" const char* ocr_ops_library_path();

namespace ocr {

namespace fs = std::filesystem;

std::array<float, 256> make_pixel_lut() {
  std::array<float, 256> lut{};
  for (int k = 0; k < 256; ++k) {
    const float v = (static_cast<float>(k) / 255.0f - 0.5f) / 0.5f;
    lut[k] = static_cast<float>(c10::BFloat16(v));  // round to nearest even, as .to(bfloat16)
  }
  return lut;
}

std::unique_ptr<LoadedModel> load_model(const std::string& dir, const std::string& device,
                                        bool verify_checksums) {
  // Referencing the ops library keeps it linked, so its op registrations exist before jit::load.
  (void)ocr_ops_library_path();
  auto model = std::make_unique<LoadedModel>(LoadedModel{
      dir, read_manifest(dir), Tokenizer::from_file((fs::path(dir) / "tokenizer.json").string())});
  try {
    model->device = torch::Device(device);
  } catch (const std::exception&) {
    throw ModelError("unknown device '" + device + "' (use cpu, cuda or cuda:N)");
  }
  if (model->device.is_cuda() && !torch::cuda::is_available())
    throw ModelError("device " + device + " requested but no CUDA device is available");
  model->dtype = model->manifest.dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat;
  // Shapes change every decoding step (the attended length grows): the profiling executor would
  // re-specialise and re-fuse the graphs again and again. Run them as plain interpreted graphs.
  torch::jit::setGraphExecutorOptimize(false);
  if (model->dtype == torch::kFloat) {
    // A float32 model computes in float32: no TF32 in cuBLAS or cuDNN (parity depends on it).
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  for (const char* name : {"encoder.pt", "decoder.pt"}) {
    const fs::path p = fs::path(dir) / name;
    if (!fs::exists(p)) throw ModelError(dir + ": " + name + " is missing; re-run scripts/export.py");
    if (verify_checksums) {
      auto it = model->manifest.files.find(name);
      if (it == model->manifest.files.end())
        throw ModelError(dir + "/manifest.json: no checksum for " + name);
      if (sha256_file(p.string()) != it->second)
        throw ModelError(p.string() + ": sha256 does not match manifest.json (file corrupted or replaced); "
                         "re-run scripts/export.py");
    }
  }
  try {
    model->encoder = torch::jit::load((fs::path(dir) / "encoder.pt").string(), model->device);
    model->decoder = torch::jit::load((fs::path(dir) / "decoder.pt").string(), model->device);
  } catch (const c10::Error& e) {
    throw ModelError(dir + ": cannot load the TorchScript modules: " + e.what_without_backtrace());
  }
  model->encoder.eval();
  model->decoder.eval();
  model->pixel_lut = make_pixel_lut();
  return model;
}

torch::Tensor views_to_pixels(const std::vector<const ImageU8*>& views, const std::array<float, 256>& lut) {
  TORCH_CHECK(!views.empty(), "views_to_pixels: no views");
  const int64_t side = views[0]->width;
  auto out = torch::empty({static_cast<int64_t>(views.size()), 3, side, side}, torch::kFloat);
  float* dst = out.data_ptr<float>();
  const int64_t plane = side * side;
  for (size_t v = 0; v < views.size(); ++v) {
    const ImageU8& img = *views[v];
    TORCH_CHECK(img.width == side && img.height == side, "views_to_pixels: view ", v, " is ", img.width,
                "x", img.height, ", expected ", side, "x", side);
    float* base = dst + static_cast<int64_t>(v) * 3 * plane;
    const uint8_t* src = img.data.data();
    for (int64_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) base[c * plane + i] = lut[src[i * 3 + c]];
  }
  return out;
}

torch::Tensor encode_page(LoadedModel& model, const Views& views) {
  torch::NoGradGuard no_grad;
  auto run = [&](const std::vector<const ImageU8*>& v) {
    auto pixels = views_to_pixels(v, model.pixel_lut).to(model.device);
    return model.encoder.forward({pixels}).toTensor();
  };
  auto global = run({&views.global});
  torch::Tensor tiles = torch::empty({0}, global.options());
  if (views.has_tiles()) {
    std::vector<const ImageU8*> t;
    for (const auto& tile : views.tiles) t.push_back(&tile);
    tiles = run(t);
  }
  return model.encoder
      .get_method("layout")({global, tiles, static_cast<int64_t>(views.tiles_w),
                             static_cast<int64_t>(views.tiles_h)})
      .toTensor();
}

}  // namespace ocr
