// The fused decode-step ops' CPU kernels (ocr::rms_norm, add_rms_norm, rope_kv_write, moe_route)
// against the module math of scripts/ocr_modules.py written out with plain ATen calls:
// bit-identical in fp32 and bf16, over several shapes and non-contiguous inputs; plus a float64
// sanity check of the norm and the argument checks.
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>
#include <vector>

namespace {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

at::Tensor op_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("ocr::rms_norm", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(x, weight, eps);
}

TensorPair op_add_rms_norm(const at::Tensor& x, const at::Tensor& r, const at::Tensor& weight,
                           double eps) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ocr::add_rms_norm", "")
          .typed<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
  return op.call(x, r, weight, eps);
}

at::Tensor op_rope_kv_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& kv_cache, int64_t layer, const at::Tensor& slots,
                            const at::Tensor& positions) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ocr::rope_kv_write", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, int64_t, const at::Tensor&, const at::Tensor&)>();
  return op.call(qkv, cos, sin, kv_cache, layer, slots, positions);
}

TensorPair op_moe_route(const at::Tensor& x, const at::Tensor& router, int64_t top_k,
                        bool renormalize) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ocr::moe_route", "")
          .typed<TensorPair(const at::Tensor&, const at::Tensor&, int64_t, bool)>();
  return op.call(x, router, top_k, renormalize);
}

TensorPair op_topk_softmax(const at::Tensor& logits, int64_t top_k, bool renormalize) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("ocr::moe_topk_softmax", "")
                             .typed<TensorPair(const at::Tensor&, int64_t, bool)>();
  return op.call(logits, top_k, renormalize);
}

const std::vector<torch::Dtype> kDtypes = {torch::kFloat, torch::kBFloat16};

std::string name(torch::Dtype dtype) { return dtype == torch::kFloat ? "fp32" : "bf16"; }

// RMSNorm.forward of scripts/ocr_modules.py.
at::Tensor module_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto xf = x.to(torch::kFloat);
  xf = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * xf.to(x.scalar_type());
}

// rotate_half and Attention.forward's rope + index_put_ of scripts/ocr_modules.py.
at::Tensor module_rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, x.size(-1) - half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor module_rope_kv_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                const at::Tensor& kv_cache, int64_t layer, const at::Tensor& slots,
                                const at::Tensor& positions, int64_t n_heads) {
  const int64_t n_b = qkv.size(0), n_t = qkv.size(1), head_dim = qkv.size(2) / (3 * n_heads);
  const auto parts = qkv.split(n_heads * head_dim, -1);
  const auto q = parts[0].reshape({n_b, n_t, n_heads, head_dim});
  auto k = parts[1].reshape({n_b, n_t, n_heads, head_dim});
  const auto v = parts[2].reshape({n_b, n_t, n_heads, head_dim});
  const auto c = cos.reshape({n_b, n_t, 1, head_dim});
  const auto s = sin.reshape({n_b, n_t, 1, head_dim});
  const auto q_rot = q * c + module_rotate_half(q) * s;
  k = k * c + module_rotate_half(k) * s;
  const auto rows = slots.view({n_b, 1}).expand({n_b, n_t});
  kv_cache[layer][0].index_put_({rows, positions}, k.to(kv_cache.scalar_type()));
  kv_cache[layer][1].index_put_({rows, positions}, v.to(kv_cache.scalar_type()));
  return q_rot;
}

TEST(DecodeOps, RmsNormIsTheModuleBitForBit) {
  torch::manual_seed(1);
  const double eps = 1e-6;
  for (const auto dtype : kDtypes) {
    const auto opt = torch::TensorOptions().dtype(dtype);
    struct Input {
      std::string what;
      at::Tensor x;
    };
    std::vector<Input> inputs = {
        {"[1, 8]", torch::randn({1, 8}, opt)},
        {"[3, 1280]", torch::randn({3, 1280}, opt) * 3},
        {"[2, 5, 64]", torch::randn({2, 5, 64}, opt)},
        {"[4, 7]", torch::randn({4, 7}, opt)},
        {"[3]", torch::randn({3}, opt)},
        {"[2, 3, 2048]", torch::randn({2, 3, 2048}, opt) * 0.01},
        {"[0, 16]", torch::randn({0, 16}, opt)},
        // Non-contiguous leading dims, last dim contiguous: a column slice and a transpose.
        {"slice [5, 96 of 160]", torch::randn({5, 160}, opt).narrow(1, 32, 96)},
        {"transposed [6, 4, 32]", torch::randn({4, 6, 32}, opt).transpose(0, 1)},
    };
    for (const auto& in : inputs) {
      SCOPED_TRACE(name(dtype) + " " + in.what);
      const auto weight = torch::randn({in.x.size(-1)}, opt);
      const auto out = op_rms_norm(in.x, weight, eps);
      const auto want = module_rms_norm(in.x, weight, eps);
      EXPECT_EQ(out.sizes(), in.x.sizes());
      EXPECT_EQ(out.scalar_type(), dtype);
      EXPECT_TRUE(out.is_contiguous());
      EXPECT_TRUE(torch::equal(out, want));
      // Float64 sanity check of the formula itself (one rounding of y, one of the product).
      if (in.x.numel() > 0) {
        const auto xd = in.x.to(torch::kDouble);
        const auto yd =
            xd / torch::sqrt(xd.pow(2).mean(-1, true) + eps) * weight.to(torch::kDouble);
        const double tol = dtype == torch::kFloat ? 1e-5 : 2e-2;
        EXPECT_TRUE(torch::allclose(out.to(torch::kDouble), yd, tol, tol));
      }
    }
  }
}

TEST(DecodeOps, AddRmsNormNormsTheRoundedSum) {
  torch::manual_seed(2);
  const double eps = 1e-6;
  for (const auto dtype : kDtypes) {
    const auto opt = torch::TensorOptions().dtype(dtype);
    for (const auto& shape :
         std::vector<std::vector<int64_t>>{{1, 1, 1280}, {3, 64}, {2, 7, 33}, {5}}) {
      SCOPED_TRACE(name(dtype) + " " + c10::str(c10::IntArrayRef(shape)));
      const auto x = torch::randn(shape, opt);
      const auto r = torch::randn(shape, opt) * 4;
      const auto weight = torch::randn({shape.back()}, opt);
      const auto [sum, normed] = op_add_rms_norm(x, r, weight, eps);
      const auto want_sum = x + r;
      EXPECT_TRUE(sum.is_contiguous() && normed.is_contiguous());
      EXPECT_TRUE(torch::equal(sum, want_sum));
      EXPECT_TRUE(torch::equal(normed, module_rms_norm(want_sum, weight, eps)));
    }
    // Strided residual (a transposed view) and a sliced x.
    const auto x = torch::randn({4, 80}, opt).narrow(1, 8, 64);
    const auto r = torch::randn({64, 4}, opt).t().contiguous().view({4, 64});
    const auto r_t = torch::randn({4, 3, 64}, opt).transpose(0, 1);
    const auto x3 = torch::randn({3, 4, 64}, opt);
    const auto weight = torch::randn({64}, opt);
    const auto [s1, n1] = op_add_rms_norm(x, r, weight, eps);
    EXPECT_TRUE(torch::equal(s1, x + r) && torch::equal(n1, module_rms_norm(x + r, weight, eps)));
    const auto [s2, n2] = op_add_rms_norm(x3, r_t, weight, eps);
    EXPECT_TRUE(torch::equal(s2, x3 + r_t) &&
                torch::equal(n2, module_rms_norm(x3 + r_t, weight, eps)));
  }
}

TEST(DecodeOps, RopeKvWriteIsTheModuleBitForBit) {
  torch::manual_seed(3);
  struct Shape {
    int64_t n_b, n_t, n_heads, head_dim;
    bool unsqueezed;  // cos/sin [n_b, n_t, 1, head_dim] as the decoder builds them
  };
  const std::vector<Shape> shapes = {{1, 1, 2, 8, true},
                                     {3, 5, 4, 16, false},
                                     {2, 1, 10, 128, true},
                                     {1, 7, 3, 6, false},
                                     {4, 2, 1, 2, true}};
  const int64_t n_layers = 3, n_slots = 6, max_len = 16;
  for (const auto dtype : kDtypes) {
    const auto opt = torch::TensorOptions().dtype(dtype);
    for (const auto& s : shapes) {
      SCOPED_TRACE(name(dtype) + " n_b=" + std::to_string(s.n_b) + " n_t=" + std::to_string(s.n_t) +
                   " n_heads=" + std::to_string(s.n_heads) +
                   " head_dim=" + std::to_string(s.head_dim));
      const auto qkv = torch::randn({s.n_b, s.n_t, 3 * s.n_heads * s.head_dim}, opt);
      std::vector<int64_t> rope_shape = {s.n_b, s.n_t, s.head_dim};
      if (s.unsqueezed) rope_shape = {s.n_b, s.n_t, 1, s.head_dim};
      // Angles as the decoder makes them: cat(freqs, freqs) of position * inv_freq.
      const auto angles = torch::rand({s.n_b, s.n_t, s.head_dim / 2}) * 50;
      const auto emb = torch::cat({angles, angles}, -1).reshape(rope_shape);
      const auto cos = emb.cos().to(dtype);
      const auto sin = emb.sin().to(dtype);
      const auto cache = torch::randn({n_layers, 2, n_slots, max_len, s.n_heads, s.head_dim}, opt);
      const auto slots = torch::randperm(n_slots, torch::kLong).narrow(0, 0, s.n_b).contiguous();
      auto positions = torch::empty({s.n_b, s.n_t}, torch::kLong);
      for (int64_t b = 0; b < s.n_b; ++b)
        positions[b].copy_(torch::randperm(max_len, torch::kLong).narrow(0, 0, s.n_t));
      const int64_t layer = s.n_b % n_layers;

      auto want_cache = cache.clone();
      const auto want_q =
          module_rope_kv_write(qkv, cos, sin, want_cache, layer, slots, positions, s.n_heads);
      auto got_cache = cache.clone();
      const auto got_q = op_rope_kv_write(qkv, cos, sin, got_cache, layer, slots, positions);
      EXPECT_EQ(got_q.sizes(), (std::vector<int64_t>{s.n_b, s.n_t, s.n_heads, s.head_dim}));
      EXPECT_TRUE(got_q.is_contiguous());
      EXPECT_EQ(got_q.scalar_type(), dtype);
      EXPECT_TRUE(torch::equal(got_q, want_q));
      EXPECT_TRUE(torch::equal(got_cache, want_cache));  // written entries and everything else
      // The value half is a plain copy of v.
      const int64_t w = s.n_heads * s.head_dim;
      EXPECT_TRUE(torch::equal(
          got_cache[layer][1][slots[0].item<int64_t>()][positions[0][0].item<int64_t>()].flatten(),
          qkv[0][0].narrow(0, 2 * w, w)));
    }
  }
}

TEST(DecodeOps, RopeKvWriteRejectsBadArguments) {
  const auto qkv = torch::randn({1, 2, 3 * 2 * 8});
  const auto cos = torch::randn({1, 2, 1, 8});
  const auto cache = torch::zeros({2, 2, 3, 4, 2, 8});
  const auto slots = torch::tensor({1}, torch::kLong);
  const auto positions = torch::tensor({{0, 3}}, torch::kLong);
  EXPECT_NO_THROW(op_rope_kv_write(qkv, cos, cos, cache, 1, slots, positions));
  EXPECT_THROW(
      op_rope_kv_write(qkv, cos, cos, cache, 1, slots, torch::tensor({{0, 4}}, torch::kLong)),
      c10::Error);
  EXPECT_THROW(
      op_rope_kv_write(qkv, cos, cos, cache, 1, torch::tensor({3}, torch::kLong), positions),
      c10::Error);
  EXPECT_THROW(op_rope_kv_write(qkv, cos, cos, cache, 2, slots, positions), c10::Error);
  EXPECT_THROW(op_rope_kv_write(qkv, cos, cos, cache.to(torch::kBFloat16), 0, slots, positions),
               c10::Error);
  EXPECT_THROW(op_rope_kv_write(qkv, cos, cos, cache, 0, slots, positions.to(torch::kInt)),
               c10::Error);
  EXPECT_THROW(op_rope_kv_write(qkv.narrow(2, 0, 40), cos, cos, cache, 0, slots, positions),
               c10::Error);
  EXPECT_THROW(op_rope_kv_write(torch::randn({1, 2, 3 * 2 * 7}), torch::randn({1, 2, 7}),
                                torch::randn({1, 2, 7}), torch::zeros({2, 2, 3, 4, 2, 7}), 0, slots,
                                positions),
               c10::Error);  // odd head_dim
  try {
    op_rope_kv_write(qkv, cos, cos, cache, 1, slots, torch::tensor({{0, 9}}, torch::kLong));
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("positions in [0, 9] out of range [0, max_len = 4)"),
              std::string::npos)
        << e.what();
  }
}

TEST(DecodeOps, MoeRouteIsLinearThenTopkSoftmax) {
  torch::manual_seed(4);
  struct Shape {
    int64_t n_tokens, hidden, n_experts, top_k;
  };
  const std::vector<Shape> shapes = {{1, 8, 1, 1},  {3, 64, 8, 2},   {17, 1280, 64, 6},
                                     {5, 33, 7, 7}, {2, 16, 64, 64}, {0, 16, 4, 2}};
  for (const auto dtype : kDtypes) {
    const auto opt = torch::TensorOptions().dtype(dtype);
    for (const auto& s : shapes) {
      for (const bool renormalize : {false, true}) {
        SCOPED_TRACE(name(dtype) + " n_tokens=" + std::to_string(s.n_tokens) + " hidden=" +
                     std::to_string(s.hidden) + " n_experts=" + std::to_string(s.n_experts) +
                     " top_k=" + std::to_string(s.top_k) + (renormalize ? " renorm" : ""));
        const auto x = torch::randn({s.n_tokens, s.hidden}, opt);
        const auto router = torch::randn({s.n_experts, s.hidden}, opt) * 0.2;
        const auto [weights, ids] = op_moe_route(x, router, s.top_k, renormalize);
        ASSERT_EQ(weights.sizes(), (std::vector<int64_t>{s.n_tokens, s.top_k}));
        EXPECT_EQ(weights.scalar_type(), torch::kFloat);
        EXPECT_EQ(ids.scalar_type(), torch::kInt);
        // MoE.forward: the fp32 linear, then the existing router op.
        const auto logits =
            torch::nn::functional::linear(x.to(torch::kFloat), router.to(torch::kFloat));
        const auto [want_w, want_ids] = op_topk_softmax(logits, s.top_k, renormalize);
        EXPECT_TRUE(torch::equal(weights, want_w));
        EXPECT_TRUE(torch::equal(ids, want_ids));
        // And the plain formula: softmax, top-k (no ties in random data), optional renormalisation.
        const auto [top_p, top_i] = torch::softmax(logits, -1).topk(s.top_k, -1);
        const auto expect_w = renormalize ? top_p / top_p.sum(-1, true) : top_p;
        EXPECT_TRUE(torch::equal(ids.to(torch::kLong), top_i));
        EXPECT_TRUE(torch::allclose(weights, expect_w, 1e-6, 1e-7));
      }
    }
  }
}

TEST(DecodeOps, MoeRouteBreaksTiesTowardsTheLowerExpert) {
  for (const auto dtype : kDtypes) {
    SCOPED_TRACE(name(dtype));
    auto router = (torch::randn({6, 32}) * 0.1).to(dtype);
    router[1].fill_(1);  // with x = 1: experts 1 and 4 are the two best, exactly tied
    router[4].fill_(1);
    const auto x = torch::ones({2, 32}, dtype);
    const auto [weights, ids] = op_moe_route(x, router, 3, false);
    EXPECT_EQ(ids[0][0].item<int32_t>(), 1);
    EXPECT_EQ(ids[0][1].item<int32_t>(), 4);
    EXPECT_EQ(weights[0][0].item<float>(), weights[0][1].item<float>());
    EXPECT_TRUE(torch::equal(ids[0], ids[1]));
  }
  EXPECT_THROW(op_moe_route(torch::randn({2, 8}), torch::randn({4, 8}), 5, false), c10::Error);
  EXPECT_THROW(op_moe_route(torch::randn({2, 8}), torch::randn({4, 9}), 1, false), c10::Error);
  EXPECT_THROW(
      op_moe_route(torch::randn({2, 8}), torch::randn({4, 8}).to(torch::kBFloat16), 1, false),
      c10::Error);
}

}  // namespace
