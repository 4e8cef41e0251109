// A loaded ocr-cli model folder: manifest, TorchScript encoder and decoder, tokenizer.
#pragma once

#include <torch/script.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/manifest.h"
#include "ocr/image.h"
#include "ocr/preprocess.h"
#include "ocr/tokenizer.h"

namespace ocr {

struct LoadedModel {
  std::string dir;
  Manifest manifest;
  Tokenizer tokenizer;
  torch::jit::Module encoder;
  torch::jit::Module decoder;
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat;
  // uint8 -> normalised pixel value, bf16-rounded as the official code casts pixels to bf16.
  std::array<float, 256> pixel_lut{};
  torch::Tensor pixel_lut_device;  // pixel_lut on the device (CUDA), made at load
};

// Loads DIR (manifest, encoder.pt, decoder.pt, tokenizer.json) onto `device` ("cpu", "cuda",
// "cuda:N"). With verify_checksums the module files must match the manifest's sha256.
// Throws ocr::ModelError with an actionable message.
std::unique_ptr<LoadedModel> load_model(const std::string& dir, const std::string& device,
                                        bool verify_checksums);

// The normalisation table: bf16((k/255 - mean)/std) for k = 0..255 (mean = std = 0.5).
std::array<float, 256> make_pixel_lut();

// Square RGB views of one size -> [n, 3, S, S] float32 pixels through the table.
torch::Tensor views_to_pixels(const std::vector<const ImageU8*>& views, const std::array<float, 256>& lut);

// Encoder outputs of one page in the layout of spec 2.5/2.6 -> [n_image_tokens, hidden].
torch::Tensor encode_page(LoadedModel& model, const Views& views);

// The same for several pages at once: views of equal size across pages go through the encoder
// together (at most max_views_per_call per call). Results in page order.
std::vector<torch::Tensor> encode_pages(LoadedModel& model, const std::vector<const Views*>& pages,
                                        int64_t max_views_per_call = 64);
// The same with a cap per view side (views of that side per encoder call).
std::vector<torch::Tensor> encode_pages(LoadedModel& model, const std::vector<const Views*>& pages,
                                        const std::function<int64_t(int side)>& views_per_call);

}  // namespace ocr
