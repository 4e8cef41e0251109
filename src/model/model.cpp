#include "model/model.h"

#include <c10/util/BFloat16.h>
#include <ATen/Context.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>

#include <cstring>
#include <filesystem>
#include <map>

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
  if (model->device.is_cuda())
    model->pixel_lut_device = torch::from_blob(model->pixel_lut.data(), {256}, torch::kFloat).to(model->device);
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

// On CUDA the views travel as bytes (a quarter of the floats) from pinned memory, and the lookup
// table is applied on the device: the same values as views_to_pixels, without its CPU loop.
static torch::Tensor views_to_device_pixels(const std::vector<const ImageU8*>& views, LoadedModel& model) {
  if (!model.device.is_cuda()) return views_to_pixels(views, model.pixel_lut).to(model.device);
  const int64_t n = static_cast<int64_t>(views.size()), side = views[0]->width;
  auto bytes = torch::empty({n, side, side, 3}, torch::TensorOptions().dtype(torch::kByte).pinned_memory(true));
  uint8_t* dst = bytes.data_ptr<uint8_t>();
  const size_t view_bytes = static_cast<size_t>(side * side * 3);
  for (int64_t v = 0; v < n; ++v) {
    const ImageU8& img = *views[static_cast<size_t>(v)];
    TORCH_CHECK(img.width == side && img.height == side && img.data.size() == view_bytes, "views_to_pixels: view ", v,
                " is ", img.width, "x", img.height, ", expected ", side, "x", side);
    std::memcpy(dst + v * static_cast<int64_t>(view_bytes), img.data.data(), view_bytes);
  }
  auto on_device = bytes.to(model.device, /*non_blocking=*/true);
  return model.pixel_lut_device.index_select(0, on_device.view({-1}).to(torch::kInt))
      .view({n, side, side, 3})
      .permute({0, 3, 1, 2})
      .contiguous();
}

torch::Tensor encode_page(LoadedModel& model, const Views& views) { return encode_pages(model, {&views})[0]; }

std::vector<torch::Tensor> encode_pages(LoadedModel& model, const std::vector<const Views*>& pages,
                                        int64_t max_views_per_call) {
  return encode_pages(model, pages, [max_views_per_call](int) { return max_views_per_call; });
}

std::vector<torch::Tensor> encode_pages(LoadedModel& model, const std::vector<const Views*>& pages,
                                        const std::function<int64_t(int side)>& views_per_call) {
  torch::NoGradGuard no_grad;
  // Every view, tagged with its page and its index there (-1: the global view).
  struct Item {
    size_t page;
    int index;
    const ImageU8* view;
  };
  std::map<int, std::vector<Item>> by_side;
  for (size_t p = 0; p < pages.size(); ++p) {
    by_side[pages[p]->global.width].push_back({p, -1, &pages[p]->global});
    for (size_t t = 0; t < pages[p]->tiles.size(); ++t)
      by_side[pages[p]->tiles[t].width].push_back({p, static_cast<int>(t), &pages[p]->tiles[t]});
  }
  std::vector<torch::Tensor> global(pages.size());
  std::vector<std::vector<torch::Tensor>> tiles(pages.size());
  for (size_t p = 0; p < pages.size(); ++p) tiles[p].resize(pages[p]->tiles.size());
  for (auto& [side, items] : by_side) {
    const size_t per_call = static_cast<size_t>(std::max<int64_t>(1, views_per_call(side)));
    for (size_t start = 0; start < items.size(); start += per_call) {
      const size_t end = std::min(items.size(), start + per_call);
      std::vector<const ImageU8*> views;
      for (size_t i = start; i < end; ++i) views.push_back(items[i].view);
      auto pixels = views_to_device_pixels(views, model);
      auto out = model.encoder.forward({pixels}).toTensor();  // [n, g*g, hidden]
      for (size_t i = start; i < end; ++i) {
        auto row = out.narrow(0, static_cast<int64_t>(i - start), 1);
        if (items[i].index < 0) global[items[i].page] = row;
        else tiles[items[i].page][items[i].index] = row;
      }
    }
  }
  std::vector<torch::Tensor> result;
  for (size_t p = 0; p < pages.size(); ++p) {
    torch::Tensor t = tiles[p].empty() ? torch::empty({0}, global[p].options()) : torch::cat(tiles[p], 0);
    result.push_back(model.encoder
                         .get_method("layout")({global[p], t, static_cast<int64_t>(pages[p]->tiles_w),
                                                static_cast<int64_t>(pages[p]->tiles_h)})
                         .toTensor());
  }
  return result;
}

}  // namespace ocr
