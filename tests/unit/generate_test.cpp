// The repetition blockers against hand-computed ban sets (spec 6.1), and greedy tie-breaking.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include "generate/loop_detect.h"
#include "generate/ngram.h"
#include "generate/sampler.h"

namespace ocr {
namespace {

std::vector<int32_t> hf_banned(int n, const std::vector<int32_t>& seq) {
  NoRepeatNgram b(n);
  b.reset(seq);
  return b.banned();
}

TEST(NoRepeatNgram, BansTokensCompletingASeenNgram) {
  // Sequence 5 6 7 5 6: the 3-grams are (5,6,7) (6,7,5) (7,5,6); last two tokens (5,6) -> ban 7.
  EXPECT_EQ(hf_banned(3, {5, 6, 7, 5, 6}), (std::vector<int32_t>{7}));
  // Two continuations of the same prefix are both banned.
  EXPECT_EQ(hf_banned(2, {1, 2, 1, 3, 1}), (std::vector<int32_t>{2, 3}));
  // No earlier occurrence of the prefix: nothing banned.
  EXPECT_TRUE(hf_banned(3, {1, 2, 3, 4}).empty());
}

TEST(NoRepeatNgram, NeedsLengthAtLeastNMinusOne) {
  // HF: no ban while cur_len + 1 < n.
  EXPECT_TRUE(hf_banned(4, {7, 7}).empty());
  // cur_len + 1 == n: the prefix is the last n-1 tokens; (7,7,7) has not occurred as a 4-gram start.
  EXPECT_TRUE(hf_banned(4, {7, 7, 7}).empty());
  EXPECT_EQ(hf_banned(4, {7, 7, 7, 7, 7}), (std::vector<int32_t>{7}));
}

TEST(NoRepeatNgram, IncludesThePromptAndIsIncremental) {
  // Prompt tokens count: the image-token run alone bans a further image token once n-1 repeat.
  std::vector<int32_t> prompt = {0, 9, 9, 9, 9, 2};
  NoRepeatNgram b(3);
  b.reset(prompt);
  EXPECT_TRUE(b.banned().empty());  // prefix (9,2) never seen
  b.push(9);
  EXPECT_TRUE(b.banned().empty());  // prefix (2,9) never seen
  b.push(9);                         // prefix (9,9) seen, followed by 9 and by 2
  EXPECT_EQ(b.banned(), (std::vector<int32_t>{2, 9}));
  // Incremental equals recomputation from scratch.
  std::vector<int32_t> all = prompt;
  all.push_back(9);
  all.push_back(9);
  EXPECT_EQ(b.banned(), hf_banned(3, all));
}

TEST(NoRepeatNgram, SizeOneBansEverySeenToken) {
  EXPECT_EQ(hf_banned(1, {4, 2, 4}), (std::vector<int32_t>{2, 4}));
}

TEST(WindowedNgram, OnlyLooksAtGeneratedTokensInTheWindow) {
  const std::unordered_set<int32_t> none;
  // generated 1 2 3 1 2, n = 3: prefix (1,2) was followed by 3.
  EXPECT_EQ(windowed_ngram_banned({1, 2, 3, 1, 2}, 3, 100, none), (std::vector<int32_t>{3}));
  // Window 3 covers starts >= len - 3 = 2: n-grams starting at 2 only -> (3,1,2) prefix (3,1) no ban.
  EXPECT_TRUE(windowed_ngram_banned({1, 2, 3, 1, 2}, 3, 3, none).empty());
  // Window 5 reaches start 0.
  EXPECT_EQ(windowed_ngram_banned({1, 2, 3, 1, 2}, 3, 5, none), (std::vector<int32_t>{3}));
  // Shorter than n: nothing.
  EXPECT_TRUE(windowed_ngram_banned({1, 1}, 3, 50, none).empty());
}

TEST(WindowedNgram, WhitelistIsNeverBanned) {
  const std::unordered_set<int32_t> wl = {128821, 128822};
  std::vector<int32_t> g = {128821, 5, 128822, 128821, 5};
  // prefix (128821,5) was followed by 128822 (whitelisted) -> no ban.
  EXPECT_TRUE(windowed_ngram_banned(g, 3, 90, wl).empty());
  EXPECT_EQ(windowed_ngram_banned(g, 3, 90, {}), (std::vector<int32_t>{128822}));
}

TEST(Sampler, ArgmaxLowestIdWinsTiesAndBansApply) {
  std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(argmax(logits.data(), 4), 1);
  apply_bans(logits.data(), 4, {1});
  EXPECT_EQ(logits[1], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(argmax(logits.data(), 4), 2);
}

}  // namespace
}  // namespace ocr

namespace ocr {
namespace {

TEST(LoopDetect, FindsTheSmallestPeriodOfALongEnoughTail) {
  std::vector<int32_t> t = {9, 8, 7};
  for (int i = 0; i < 70; ++i) t.push_back(100 + i % 5);  // period 5, 70 tokens
  EXPECT_EQ(periodic_suffix(t), 5);
  std::vector<int32_t> same(64, 42);
  EXPECT_EQ(periodic_suffix(same), 1);
}

TEST(LoopDetect, NeedsTheMinimumTailAndRepeats) {
  std::vector<int32_t> t;
  for (int i = 0; i < 63; ++i) t.push_back(i % 3);
  EXPECT_EQ(periodic_suffix(t), 0);  // 63 < 64 tokens
  t.push_back(0);
  EXPECT_EQ(periodic_suffix(t), 3);
  // A period of 40 needs 4 repeats (160 tokens); 150 tokens are not enough.
  std::vector<int32_t> long_period;
  for (int i = 0; i < 150; ++i) long_period.push_back(i % 40);
  EXPECT_EQ(periodic_suffix(long_period), 0);
  for (int i = 150; i < 160; ++i) long_period.push_back(i % 40);
  EXPECT_EQ(periodic_suffix(long_period), 40);
}

TEST(LoopDetect, OrdinaryTextIsNotALoop) {
  std::vector<int32_t> t;
  uint32_t s = 1;
  for (int i = 0; i < 2000; ++i) {
    s = s * 1103515245u + 12345u;
    t.push_back(static_cast<int32_t>((s >> 16) % 5000));
  }
  EXPECT_EQ(periodic_suffix(t), 0);
  // A broken period (one token differs inside the tail) is not a loop.
  std::vector<int32_t> almost(100, 7);
  almost[60] = 8;
  EXPECT_EQ(periodic_suffix(almost), 0);
}

TEST(Sampler, SameSeedSameTokensAndTopPOneTokenIsGreedy) {
  std::vector<float> logits = {1.0f, 2.0f, 0.5f, 1.5f, -3.0f};
  std::mt19937_64 a(7), b(7);
  std::vector<int32_t> xa, xb;
  for (int i = 0; i < 200; ++i) {
    xa.push_back(sample(logits.data(), 5, 1.0, 1.0, a));
    xb.push_back(sample(logits.data(), 5, 1.0, 1.0, b));
  }
  EXPECT_EQ(xa, xb);
  EXPECT_GT(std::count(xa.begin(), xa.end(), 0), 0);  // not greedy at T=1
  std::mt19937_64 c(1);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample(logits.data(), 5, 1.0, 0.01, c), 1);  // nucleus = top id
  EXPECT_EQ(sample(logits.data(), 5, 0.0, 1.0, c), 1);                                // T=0: argmax
}

}  // namespace
}  // namespace ocr
