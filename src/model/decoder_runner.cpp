#include "model/decoder_runner.h"

#include "ocr/errors.h"

namespace ocr {

torch::Tensor make_kv_cache(const LoadedModel& model, int64_t n_slots, int64_t max_len) {
  const auto& m = model.manifest;
  return torch::zeros({m.n_layers, 2, n_slots, max_len, m.n_heads, m.head_dim},
                      torch::TensorOptions().dtype(model.dtype).device(model.device));
}

torch::Tensor embed_ids(LoadedModel& model, const torch::Tensor& ids) {
  return model.decoder.get_method("embed")({ids}).toTensor();
}

torch::Tensor embed_prompt(LoadedModel& model, const std::vector<int32_t>& ids, const torch::Tensor& visual) {
  torch::NoGradGuard no_grad;
  auto id_tensor = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).to(model.device);
  auto h = embed_ids(model, id_tensor.unsqueeze(0)).squeeze(0);  // [n_ids, hidden]
  auto mask = id_tensor.eq(model.manifest.tokens.image);
  const int64_t n_image = mask.sum().item<int64_t>();
  if (n_image != visual.size(0))
    throw InputError("prompt has " + std::to_string(n_image) + " image tokens but the encoder produced " +
                     std::to_string(visual.size(0)) + " visual embeddings");
  if (n_image > 0) h.index_put_({mask}, visual.to(h.dtype()));
  return h;
}

DecoderOutput decoder_forward(LoadedModel& model, const torch::Tensor& h, const torch::Tensor& positions,
                              torch::Tensor& kv_cache, const torch::Tensor& slots, int64_t kv_len,
                              const torch::Tensor& last_idx, bool return_hidden) {
  torch::NoGradGuard no_grad;
  auto out = model.decoder.forward({h, positions, kv_cache, slots, kv_len, last_idx, return_hidden}).toTuple();
  return {out->elements()[0].toTensor(), out->elements()[1].toTensor()};
}

}  // namespace ocr
