// ocr::decode_attention's CPU kernel against scaled_dot_product_attention with the decoder's
// additive 0/-inf causal mask on the gathered keys (fp32 and bf16, several B/H/D/lengths, slots in
// any order, positions past kv_len), the keys it must not see, and the argument checks.
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

namespace {

at::Tensor op_decode_attention(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                               const at::Tensor& slots, const at::Tensor& positions,
                               int64_t kv_len) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("ocr::decode_attention", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t,
                                               const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(q, kv_cache, layer, slots, positions, kv_len);
}

// The decoder before the op (scripts/ocr_modules.py): gathered keys [B, H, kv_len, D], the mask
// key_pos > position -> -inf, SDPA; here in fp32 on fp32 copies, rounded once to q's dtype.
at::Tensor sdpa_reference(const at::Tensor& q, const at::Tensor& kv_cache, int64_t layer,
                          const at::Tensor& slots, const at::Tensor& positions, int64_t kv_len) {
  const int64_t n_b = q.size(0);
  const auto k = kv_cache[layer][0].index_select(0, slots).narrow(1, 0, kv_len).to(torch::kFloat);
  const auto v = kv_cache[layer][1].index_select(0, slots).narrow(1, 0, kv_len).to(torch::kFloat);
  const auto key_pos = torch::arange(kv_len);
  const auto future = key_pos.view({1, 1, 1, kv_len}) > positions.view({n_b, 1, 1, 1});
  const auto mask = torch::zeros(future.sizes(), torch::kFloat)
                        .masked_fill_(future, -std::numeric_limits<float>::infinity());
  const auto out = at::scaled_dot_product_attention(q.to(torch::kFloat).transpose(1, 2),
                                                    k.transpose(1, 2), v.transpose(1, 2), mask);
  return out.transpose(1, 2).to(q.scalar_type());  // [B, 1, H, D]
}

struct Case {
  int64_t n_b, n_heads, head_dim, n_slots, max_len, kv_len;
};

std::string describe(const Case& c, torch::Dtype dtype) {
  return std::string(dtype == torch::kFloat ? "fp32" : "bf16") + " B=" + std::to_string(c.n_b) +
         " H=" + std::to_string(c.n_heads) + " D=" + std::to_string(c.head_dim) +
         " kv_len=" + std::to_string(c.kv_len);
}

// Random inputs: slots a random permutation prefix (not ascending), positions a mix of 0, tiny,
// anywhere below kv_len and past it (clipped to kv_len - 1).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> make_inputs(const Case& c,
                                                                       torch::Dtype dtype) {
  auto q = (torch::randn({c.n_b, 1, c.n_heads, c.head_dim}) * 2).to(dtype);
  auto cache = torch::randn({2, 2, c.n_slots, c.max_len, c.n_heads, c.head_dim}).to(dtype);
  auto slots = torch::randperm(c.n_slots).narrow(0, 0, c.n_b).contiguous();
  auto positions = torch::empty({c.n_b, 1}, torch::kLong);
  for (int64_t b = 0; b < c.n_b; ++b) {
    int64_t p = 0;
    switch (b % 4) {
      case 0:
        p = torch::randint(0, c.kv_len, {1}).item<int64_t>();
        break;
      case 1:
        p = std::min<int64_t>(b % 3, c.max_len - 1);
        break;
      case 2:
        p = torch::randint(c.kv_len - 1, c.max_len, {1}).item<int64_t>();
        break;
      default:
        p = c.kv_len - 1;
        break;
    }
    positions[b][0] = p;
  }
  return {q, cache, slots, positions};
}

void expect_close(const at::Tensor& got, const at::Tensor& want, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  EXPECT_TRUE(got.is_contiguous()) << what;
  const auto g = got.to(torch::kDouble), w = want.to(torch::kDouble);
  const auto diff = (g - w).abs();
  EXPECT_TRUE(torch::isfinite(g).all().item<bool>()) << what;
  EXPECT_TRUE((diff <= atol + rtol * w.abs()).all().item<bool>())
      << what << ": max abs diff " << diff.max().item<double>();
}

const std::vector<Case> kCases = {
    {1, 10, 128, 3, 40, 33}, {3, 4, 16, 5, 20, 7},  {17, 2, 64, 20, 300, 256},
    {5, 1, 2, 7, 9, 1},      {4, 3, 32, 6, 70, 64}, {2, 10, 128, 2, 1030, 1024},
};

TEST(AttentionOps, DecodeAttentionIsMaskedSdpa) {
  torch::manual_seed(7);
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    // fp32: only the summation order differs; bf16: both round the same fp32 value once, so at
    // most one bf16 ulp apart (2^-8 relative), within 2e-2 abs on values ~1.
    const double atol = dtype == torch::kFloat ? 1e-5 : 2e-2;
    const double rtol = dtype == torch::kFloat ? 1e-5 : 1e-2;
    for (const auto& c : kCases) {
      const auto [q, cache, slots, positions] = make_inputs(c, dtype);
      const int64_t layer = c.n_b % 2;
      const auto got = op_decode_attention(q, cache, layer, slots, positions, c.kv_len);
      const auto want = sdpa_reference(q, cache, layer, slots, positions, c.kv_len);
      expect_close(got, want, atol, rtol, describe(c, dtype));
    }
  }
}

TEST(AttentionOps, DecodeAttentionReadsOnlyTheRowsKeys) {
  torch::manual_seed(11);
  const Case c{4, 3, 16, 6, 50, 40};
  const auto [q, cache, slots, positions_in] = make_inputs(c, torch::kFloat);
  auto positions = positions_in.clone();
  positions[0][0] = 5;
  positions[1][0] = 45;  // past kv_len: clipped to key 39
  positions[2][0] = 0;
  positions[3][0] = 39;
  const auto want = op_decode_attention(q, cache, 1, slots, positions, c.kv_len);
  // Keys after each row's last attended key, the other slots and the other layer do not matter.
  auto noisy = cache.clone();
  noisy[0].fill_(-3e4);
  auto used = torch::zeros({c.n_slots}, torch::kBool);
  used.index_put_({slots}, true);
  for (int64_t s = 0; s < c.n_slots; ++s)
    if (!used[s].item<bool>()) noisy[1].select(1, s).fill_(7e3);
  for (int64_t b = 0; b < c.n_b; ++b) {
    const int64_t s = slots[b].item<int64_t>();
    const int64_t last = std::min<int64_t>(positions[b][0].item<int64_t>(), c.kv_len - 1);
    noisy[1].select(1, s).narrow(1, last + 1, c.max_len - last - 1).fill_(1e4);
  }
  const auto got = op_decode_attention(q, noisy, 1, slots, positions, c.kv_len);
  EXPECT_TRUE(torch::equal(got, want));
  // A position past kv_len attends exactly keys 0 .. kv_len - 1.
  auto clipped = positions.clone();
  clipped[1][0] = c.kv_len - 1;
  EXPECT_TRUE(torch::equal(op_decode_attention(q, cache, 1, slots, clipped, c.kv_len), want));
  // Row 2 (position 0) sees one key: its output is that key's value.
  const int64_t s2 = slots[2].item<int64_t>();
  EXPECT_TRUE(torch::allclose(want[2][0], cache[1][1][s2][0], 1e-6, 1e-6));
  // The rows are independent: one row alone gives the same result.
  const auto one = op_decode_attention(q.narrow(0, 3, 1), cache, 1, slots.narrow(0, 3, 1),
                                       positions.narrow(0, 3, 1), c.kv_len);
  EXPECT_TRUE(torch::allclose(one[0], want[3], 1e-6, 1e-6));
}

TEST(AttentionOps, DecodeAttentionEmptyBatch) {
  const auto out =
      op_decode_attention(torch::randn({0, 1, 2, 8}), torch::randn({1, 2, 3, 4, 2, 8}), 0,
                          torch::zeros({0}, torch::kLong), torch::zeros({0, 1}, torch::kLong), 4);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{0, 1, 2, 8}));
}

TEST(AttentionOps, DecodeAttentionRejectsBadArguments) {
  const auto q = torch::randn({2, 1, 3, 8});
  const auto cache = torch::randn({2, 2, 4, 16, 3, 8});
  const auto slots = torch::tensor({2, 0}, torch::kLong);
  const auto positions = torch::tensor({5, 15}, torch::kLong).view({2, 1});
  EXPECT_NO_THROW(op_decode_attention(q, cache, 1, slots, positions, 16));
  // q: shape, two queries per row, dtype, layout; head_dim odd or too large.
  EXPECT_THROW(op_decode_attention(q.view({2, 3, 8}), cache, 0, slots, positions, 16), c10::Error);
  EXPECT_THROW(op_decode_attention(torch::randn({2, 2, 3, 8}), cache, 0, slots, positions, 16),
               c10::Error);
  EXPECT_THROW(
      op_decode_attention(q.to(torch::kDouble), cache.to(torch::kDouble), 0, slots, positions, 16),
      c10::Error);
  EXPECT_THROW(op_decode_attention(torch::randn({2, 1, 8, 3}).transpose(2, 3), cache, 0, slots,
                                   positions, 16),
               c10::Error);
  EXPECT_THROW(op_decode_attention(torch::randn({2, 1, 3, 7}), torch::randn({2, 2, 4, 16, 3, 7}), 0,
                                   slots, positions, 16),
               c10::Error);
  EXPECT_THROW(op_decode_attention(torch::randn({2, 1, 1, 258}),
                                   torch::randn({1, 2, 4, 16, 1, 258}), 0, slots, positions, 16),
               c10::Error);
  // kv_cache: dtype, heads, head_dim, rank, layout.
  EXPECT_THROW(op_decode_attention(q, cache.to(torch::kBFloat16), 0, slots, positions, 16),
               c10::Error);
  EXPECT_THROW(op_decode_attention(q, torch::randn({2, 2, 4, 16, 2, 8}), 0, slots, positions, 16),
               c10::Error);
  EXPECT_THROW(op_decode_attention(q, torch::randn({2, 2, 4, 16, 3, 16}), 0, slots, positions, 16),
               c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache[0], 0, slots, positions, 16), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache.transpose(2, 3).contiguous().transpose(2, 3), 0, slots,
                                   positions, 16),
               c10::Error);
  // layer and kv_len ranges.
  EXPECT_THROW(op_decode_attention(q, cache, 2, slots, positions, 16), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, -1, slots, positions, 16), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots, positions, 0), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots, positions, 17), c10::Error);
  // slots and positions: dtype, shape, value ranges (CPU).
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots.to(torch::kInt), positions, 16), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots.narrow(0, 0, 1), positions, 16), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots, positions.view({2}), 16), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots, positions.to(torch::kInt), 16), c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, torch::tensor({4, 0}, torch::kLong), positions, 16),
               c10::Error);
  EXPECT_THROW(
      op_decode_attention(q, cache, 0, torch::tensor({-1, 0}, torch::kLong), positions, 16),
      c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots,
                                   torch::tensor({-1, 3}, torch::kLong).view({2, 1}), 16),
               c10::Error);
  EXPECT_THROW(op_decode_attention(q, cache, 0, slots,
                                   torch::tensor({16, 3}, torch::kLong).view({2, 1}), 16),
               c10::Error);
  // The message names the op and the value.
  try {
    op_decode_attention(q, cache, 0, slots, positions, 17);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("decode_attention: kv_len 17"), std::string::npos)
        << e.what();
  }
}

}  // namespace
