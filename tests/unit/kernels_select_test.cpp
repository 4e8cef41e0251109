// ocr::select_tokens (CPU kernel) against the host blockers of generate/ngram.h and plain argmax:
// random sequences over a small vocabulary so that n-grams repeat often.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

#include "generate/ngram.h"
#include "kernels/select.h"
#include "model/step.h"

namespace {

namespace k = ocr::kernels;

struct Case {
  std::vector<int32_t> prompt, generated;
  int no_repeat = 0, ngram = 0, window = 0;
  std::vector<int32_t> white;
};

// Runs the op on one row with all-zero logits in host-choice state: returns the banned ids.
std::set<int32_t> op_bans(const Case& c, int64_t vocab) {
  const int64_t len = static_cast<int64_t>(c.prompt.size() + c.generated.size());
  auto seq = torch::zeros({1, len + 4}, torch::kInt);
  for (size_t i = 0; i < c.prompt.size(); ++i) seq[0][static_cast<int64_t>(i)] = c.prompt[i];
  for (size_t i = 0; i < c.generated.size(); ++i) seq[0][static_cast<int64_t>(c.prompt.size() + i)] = c.generated[i];
  auto lens = torch::full({1}, static_cast<int32_t>(len), torch::kInt);
  auto params = torch::zeros({1, k::kSelectParams}, torch::kInt);
  params[0][k::kPromptLen] = static_cast<int32_t>(c.prompt.size());
  params[0][k::kMaxNew] = 1000;
  params[0][k::kNoRepeatN] = c.no_repeat;
  params[0][k::kNgramN] = c.ngram;
  params[0][k::kNgramWindow] = c.window;
  params[0][k::kState] = k::kHostChoice;
  params[0][k::kEos] = -1;
  auto white = torch::full({1, 4}, -1, torch::kInt);
  for (size_t w = 0; w < c.white.size(); ++w) white[0][static_cast<int64_t>(w)] = c.white[w];
  ocr::StepState st;
  st.seq = seq;
  st.lens = lens;
  st.params = params;
  st.whitelist = white;
  st.next_ids = torch::zeros({1, 1}, torch::kLong);
  st.next_pos = torch::zeros({1, 1}, torch::kLong);
  auto logits = torch::zeros({1, vocab});
  auto emitted = ocr::select_tokens(logits, torch::zeros({1}, torch::kLong), st, torch::full({1}, -1, torch::kLong));
  EXPECT_EQ(emitted[0].item<int64_t>(), k::kEmittedHost);
  EXPECT_EQ(st.lens[0].item<int32_t>(), len);  // host choice: nothing appended
  std::set<int32_t> out;
  for (int64_t v = 0; v < vocab; ++v)
    if (std::isinf(logits[0][v].item<float>())) out.insert(static_cast<int32_t>(v));
  return out;
}

std::set<int32_t> host_bans(const Case& c) {
  std::set<int32_t> out;
  if (c.no_repeat > 0) {
    ocr::NoRepeatNgram nr(c.no_repeat);
    std::vector<int32_t> all = c.prompt;
    all.insert(all.end(), c.generated.begin(), c.generated.end());
    nr.reset(all);
    for (int32_t t : nr.banned()) out.insert(t);
  }
  if (c.ngram > 0) {
    const std::unordered_set<int32_t> white(c.white.begin(), c.white.end());
    for (int32_t t : ocr::windowed_ngram_banned(c.generated, c.ngram, c.window, white)) out.insert(t);
  }
  return out;
}

TEST(SelectTokens, BansEqualTheHostBlockersOnRandomSequences) {
  std::mt19937 rng(7);
  const int64_t vocab = 12;
  int with_bans = 0;
  for (int trial = 0; trial < 600; ++trial) {
    Case c;
    std::uniform_int_distribution<int> tok(0, static_cast<int>(vocab) - 1), len(0, 40), n(0, 6), w(0, 30);
    c.prompt.resize(static_cast<size_t>(len(rng) % 12));
    c.generated.resize(static_cast<size_t>(len(rng)));
    for (auto& t : c.prompt) t = tok(rng);
    for (auto& t : c.generated) t = tok(rng) % (trial % 3 == 0 ? 3 : 12);  // some very repetitive
    c.no_repeat = trial % 2 ? n(rng) : 0;
    c.ngram = trial % 3 ? n(rng) : 0;
    c.window = w(rng);
    if (trial % 4 == 0) c.white = {tok(rng), tok(rng)};
    const auto want = host_bans(c);
    with_bans += !want.empty();
    ASSERT_EQ(op_bans(c, vocab), want) << "trial " << trial;
  }
  EXPECT_GT(with_bans, 100);  // not vacuous (169 of 600 cases have bans)
}

TEST(SelectTokens, GreedyAppendsTheArgmaxAfterBansAndStopsAtEosOrCap) {
  const int64_t vocab = 10;
  ocr::StepState st;
  st.seq = torch::zeros({2, 16}, torch::kInt);
  st.lens = torch::tensor({3, 2}, torch::kInt);
  st.seq[0].narrow(0, 0, 3).copy_(torch::tensor({5, 6, 5}, torch::kInt));
  st.params = torch::zeros({2, k::kSelectParams}, torch::kInt);
  for (int r = 0; r < 2; ++r) {
    st.params[r][k::kPromptLen] = 1;
    st.params[r][k::kState] = k::kGreedy;
    st.params[r][k::kEos] = 9;
  }
  st.params[0][k::kMaxNew] = 5;
  st.params[1][k::kMaxNew] = 2;
  st.params[0][k::kNoRepeatN] = 2;  // (5, 6) seen: after ...5, token 6 is banned
  st.whitelist = torch::full({2, 1}, -1, torch::kInt);
  st.next_ids = torch::zeros({2, 1}, torch::kLong);
  st.next_pos = torch::zeros({2, 1}, torch::kLong);
  auto logits = torch::zeros({2, vocab});
  logits[0][6] = 5;  // banned
  logits[0][2] = 3;
  logits[0][4] = 3;  // tie with 2: the lower id wins
  logits[1][7] = 1;
  auto rows = torch::tensor({0, 1}, torch::kLong);
  auto e = ocr::select_tokens(logits, rows, st, torch::full({2}, -1, torch::kLong));
  EXPECT_EQ(e[0].item<int64_t>(), 2);
  EXPECT_EQ(e[1].item<int64_t>(), 7);
  EXPECT_EQ(st.lens[0].item<int>(), 4);
  EXPECT_EQ(st.seq[0][3].item<int>(), 2);
  EXPECT_EQ(st.next_ids[0][0].item<int64_t>(), 2);
  EXPECT_EQ(st.next_pos[0][0].item<int64_t>(), 3);
  EXPECT_EQ(st.params[0][k::kState].item<int>(), k::kGreedy);
  EXPECT_EQ(st.params[1][k::kState].item<int>(), k::kIdle);  // 2 generated tokens = its cap
  EXPECT_EQ(st.next_pos[1][0].item<int64_t>(), 0);  // a finished row's later steps attend one key
  // Row 0 emits EOS and stops; row 1 is idle and untouched.
  logits = torch::zeros({2, vocab});
  logits[0][9] = 1;
  e = ocr::select_tokens(logits, rows, st, torch::full({2}, -1, torch::kLong));
  EXPECT_EQ(e[0].item<int64_t>(), 9);
  EXPECT_EQ(e[1].item<int64_t>(), k::kEmittedIdle);
  EXPECT_EQ(st.params[0][k::kState].item<int>(), k::kIdle);
  EXPECT_EQ(st.next_pos[0][0].item<int64_t>(), 0);
  EXPECT_EQ(st.lens[1].item<int>(), 3);
  EXPECT_EQ(st.next_pos[1][0].item<int64_t>(), 0);
  // Forced tokens are appended as given (the host's sampling path).
  st.params[0][k::kState] = k::kHostChoice;
  auto one = torch::zeros({1, vocab});
  e = ocr::select_tokens(one, torch::tensor({0}, torch::kLong), st, torch::full({1}, 8, torch::kLong));
  EXPECT_EQ(e[0].item<int64_t>(), 8);
  EXPECT_EQ(st.seq[0][5].item<int>(), 8);
}

}  // namespace
