// Engine tests on the tiny exported model (made by the ctest fixture model.make_tiny).
#include <gtest/gtest.h>
#include <torch/script.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "engine/prompt.h"
#include "model/decoder_runner.h"
#include "model/model.h"
#include "ocr/engine.h"
#include "ocr/errors.h"
#include "ocr/preprocess.h"

namespace ocr {
namespace {

namespace fs = std::filesystem;

const std::string kModel = std::string(OCR_BUILD_DIR) + "/models/tiny";

// A deterministic page-like image: dark strokes on a light background.
ImageU8 page(int w, int h, int seed) {
  ImageU8 img(w, h, 235);
  uint32_t s = 2654435761u * static_cast<uint32_t>(seed + 1);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      s = s * 1664525u + 1013904223u;
      const bool ink = ((y / 12) % 3 == 1) && ((x / 7 + seed) % 5 != 0) && (s >> 29) != 0;
      if (ink)
        for (int c = 0; c < 3; ++c) img.px(x, y)[c] = static_cast<uint8_t>(20 + ((x + c * 40 + seed) % 60));
    }
  return img;
}

PageInput request(const ImageU8& img, const std::string& mode, int max_new, const std::string& task = "free") {
  PageInput p;
  p.image = img;
  p.mode = mode;
  p.prompt = task_prompt(task);
  p.decoding.max_new_tokens = max_new;
  return p;
}

TEST(Engine, IncrementalDecodingWithKvCacheEqualsFullRecomputation) {
  auto model = load_model(kModel, "cpu", true);
  torch::NoGradGuard no_grad;
  const ModeSpec& mode = find_mode(model->manifest.modes, "tiny");
  const Views views = make_views(page(500, 380, 1), mode);
  const auto visual = encode_page(*model, views);
  const auto ids = build_prompt_ids(model->tokenizer, task_prompt("free"),
                                    count_image_tokens(mode, 1, 1, false), model->manifest.tokens.bos,
                                    model->manifest.tokens.image);
  const int64_t n = static_cast<int64_t>(ids.size());
  const int steps = 12;
  auto lopt = torch::TensorOptions().dtype(torch::kLong);
  auto slot = torch::zeros({1}, lopt);

  // Incremental: prefill, then one token at a time through the cache.
  auto cache = make_kv_cache(*model, 1, n + steps);
  auto h = embed_prompt(*model, ids, visual).unsqueeze(0);
  auto logits = decoder_forward(*model, h, torch::arange(n, lopt).unsqueeze(0), cache, slot, n,
                                torch::full({1}, n - 1, lopt)).logits;
  std::vector<torch::Tensor> step_logits{logits};
  std::vector<int64_t> generated;
  for (int s = 0; s < steps; ++s) {
    const int64_t tok = logits.argmax(-1).item<int64_t>();
    generated.push_back(tok);
    auto e = embed_ids(*model, torch::full({1, 1}, tok, lopt));
    logits = decoder_forward(*model, e, torch::full({1, 1}, n + s, lopt), cache, slot, n + s + 1,
                             torch::zeros({1}, lopt)).logits;
    step_logits.push_back(logits);
  }
  // Full recomputation of every prefix from scratch, with a fresh cache each time.
  for (int s = 0; s <= steps; ++s) {
    auto full_h = embed_prompt(*model, ids, visual);
    if (s > 0) {
      auto gen = torch::tensor(std::vector<int64_t>(generated.begin(), generated.begin() + s), lopt);
      full_h = torch::cat({full_h, embed_ids(*model, gen.unsqueeze(0)).squeeze(0)}, 0);
    }
    const int64_t len = full_h.size(0);
    auto fresh = make_kv_cache(*model, 1, len);
    auto full = decoder_forward(*model, full_h.unsqueeze(0), torch::arange(len, lopt).unsqueeze(0), fresh, slot,
                                len, torch::full({1}, len - 1, lopt)).logits;
    const double err = (full - step_logits[s]).abs().max().item<double>();
    EXPECT_LT(err, 1e-4) << "step " << s;
    EXPECT_EQ(full.argmax(-1).item<int64_t>(), step_logits[s].argmax(-1).item<int64_t>()) << "step " << s;
  }
}

TEST(Engine, PagesInOneBatchGiveTheSameTokensAsEachAlone) {
  Engine engine({kModel});
  // Different modes and sizes: different prompt lengths, so the batch is padded.
  std::vector<PageInput> pages = {request(page(800, 600, 2), "base", 20, "markdown"),
                                  request(page(500, 380, 3), "tiny", 14, "describe"),
                                  request(page(1224, 1584, 4), "gundam", 20, "ocr")};
  const auto together = engine.run(pages);
  ASSERT_EQ(together.size(), pages.size());
  // The run's counters (the benchmark reports them): one admission group; each token after a
  // page's first (which the prefill chooses) is one busy row of one decoding step.
  const EngineStats st = engine.last_stats();
  EXPECT_EQ(st.admissions, 1);
  int64_t rows = 0;
  size_t longest = 0;
  for (const auto& o : together) {
    rows += static_cast<int64_t>(o.tokens.size()) - 1;
    longest = std::max(longest, o.tokens.size());
  }
  EXPECT_EQ(st.rows, rows);
  EXPECT_EQ(st.padded_rows, rows);  // CPU: eager steps over the busy rows only
  EXPECT_EQ(st.steps, static_cast<int64_t>(longest) - 1);
  EXPECT_EQ(st.graphs_captured, 0);
  for (size_t i = 0; i < pages.size(); ++i) {
    const auto alone = engine.run({pages[i]});
    EXPECT_EQ(together[i].tokens, alone[0].tokens) << "page " << i;
    EXPECT_EQ(together[i].prompt_ids, alone[0].prompt_ids) << "page " << i;
    EXPECT_EQ(together[i].text, alone[0].text) << "page " << i;
    EXPECT_FALSE(together[i].tokens.empty());
  }
}

struct TokenCountCase {
  int w, h;
  std::string mode;
  int max_tiles;
  int64_t image_tokens;
  int tiles_w, tiles_h;
};

TEST(Engine, ImageTokenCountsPerModeMatchTheSpec) {
  Engine engine({kModel});
  // Spec 4.2-4.4 and the worked examples of 4.3.
  const std::vector<TokenCountCase> cases = {
      {500, 380, "tiny", 9, 73, 1, 1},        {1584, 1224, "small", 9, 111, 1, 1},
      {800, 600, "base", 9, 273, 1, 1},       {800, 600, "large", 9, 421, 1, 1},
      {1224, 1584, "gundam", 9, 903, 2, 3},   {1191, 1684, "gundam", 9, 903, 2, 3},
      {1584, 1224, "gundam", 9, 893, 3, 2},   {800, 600, "gundam", 9, 893, 3, 2},
      {1000, 1000, "gundam", 9, 693, 2, 2},   {2000, 2000, "gundam", 6, 693, 2, 2},
      {2000, 2000, "gundam", 9, 1203, 3, 3},  {2000, 1000, "gundam", 6, 483, 2, 1},
      {2000, 1000, "gundam", 9, 1093, 4, 2},  {600, 400, "gundam", 9, 273, 1, 1},
      {640, 640, "gundam", 9, 273, 1, 1},     {641, 300, "gundam", 9, 483, 2, 1},
  };
  for (const auto& c : cases) {
    PageInput p = request(page(c.w, c.h, 5), c.mode, 1);
    p.tiling.max_tiles = c.max_tiles;
    const auto r = engine.run({p});
    const std::string what = std::to_string(c.w) + "x" + std::to_string(c.h) + " " + c.mode;
    EXPECT_EQ(r[0].n_image_tokens, c.image_tokens) << what;
    EXPECT_EQ(r[0].tiles_w, c.tiles_w) << what;
    EXPECT_EQ(r[0].tiles_h, c.tiles_h) << what;
    // BOS + image run + "\nFree OCR." (4 ids): the prompt holds exactly the counted image tokens.
    EXPECT_EQ(static_cast<int64_t>(r[0].prompt_ids.size()), 1 + c.image_tokens + 4) << what;
    EXPECT_EQ(r[0].tokens.size(), 1u) << what;
  }
}

TEST(Engine, ModelFolderErrorsAreActionable) {
  const fs::path dir = fs::temp_directory_path() / "ocr-engine-test-bad-model";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& f : fs::directory_iterator(kModel)) fs::copy(f.path(), dir / f.path().filename());
  // Wrong format version.
  {
    std::ifstream in(dir / "manifest.json");
    std::string s((std::istreambuf_iterator<char>(in)), {});
    const auto at = s.find("\"format_version\": 1");
    ASSERT_NE(at, std::string::npos);
    s.replace(at, 19, "\"format_version\": 99");
    std::ofstream(dir / "manifest.json") << s;
    try {
      Engine e({dir.string()});
      FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("re-run scripts/export.py"), std::string::npos) << e.what();
    }
    fs::copy_file(fs::path(kModel) / "manifest.json", dir / "manifest.json", fs::copy_options::overwrite_existing);
  }
  // A corrupted module file fails the sha256 check.
  {
    std::fstream f(dir / "decoder.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
    f.close();
    try {
      Engine e({dir.string()});
      FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ocr
