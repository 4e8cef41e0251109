#include "engine/parity.h"

#include <torch/script.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <ostream>
#include <regex>
#include <sstream>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/prompt.h"
#include "generate/ngram.h"
#include "generate/sampler.h"
#include "model/decoder_runner.h"
#include "model/model.h"
#include "model/step.h"
#include "kernels/select.h"
#include "model/safetensors.h"
#include "ocr/errors.h"
#include "ocr/image_io.h"
#include "ocr/preprocess.h"

extern "C" const char* ocr_ops_library_path();

namespace ocr {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

torch::Tensor read_tensor(const SafetensorsFile& f, const std::string& name) {
  const auto& e = f.entry(name);
  torch::ScalarType t;
  if (e.dtype == "F32") t = torch::kFloat;
  else if (e.dtype == "I64") t = torch::kLong;
  else if (e.dtype == "BF16") t = torch::kBFloat16;
  else throw ModelError(f.path() + ": tensor " + name + " has unsupported dtype " + e.dtype);
  return torch::from_blob(const_cast<uint8_t*>(f.bytes(name)), e.shape, t).clone();
}

// Recursive delete with POSIX calls: libtorch.so exports its own, crashing copy of
// std::filesystem::remove_all, which can win symbol resolution in a process that loads it.
int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
void remove_tree(const std::string& path) { ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string find_export_script() {
  if (const char* env = std::getenv("OCR_EXPORT_SCRIPT"); env && *env) return env;
  for (const std::string& p : {std::string(OCR_SOURCE_DIR) + "/scripts/export.py",
                               std::string(OCR_INSTALL_DATADIR) + "/scripts/export.py"})
    if (fs::exists(p)) return p;
  throw ModelError("cannot find scripts/export.py (set OCR_EXPORT_SCRIPT)");
}

// Exports the fixture's HF checkpoint in float32 with our exporter; returns the model folder.
std::string export_fixture(const std::string& fixture_dir, const std::string& out_dir, std::ostream& log) {
  const char* py = std::getenv("OCR_PYTHON");
  const std::string cmd = std::string(py && *py ? py : "python3") + " " + quote(find_export_script()) + " " +
                          quote(fixture_dir) + " " + quote(out_dir) + " --dtype fp32 --ops-lib " +
                          quote(ocr_ops_library_path()) + " > " + quote(out_dir + ".log") + " 2>&1";
  log << "exporting " << fixture_dir << " (fp32) with scripts/export.py ...\n";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream f(out_dir + ".log");
    std::stringstream ss;
    ss << f.rdbuf();
    throw ModelError("export of the fixture checkpoint failed:\n" + ss.str());
  }
  return out_dir;
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
  if (a.numel() == 0) return 0;
  auto x = a.to(torch::kDouble), y = b.to(torch::kDouble);
  // Equal infinities (banned ids score -inf on both sides) count as agreement.
  auto same_inf = x.isinf().logical_and(y.isinf()).logical_and(x.eq(y));
  auto d = (x - y).abs().masked_fill(same_inf, 0.0);
  return d.max().item<double>();
}

struct CaseReport {
  json j = json::object();
  bool ok = true;
  std::vector<std::string> failures;
  void check(const std::string& what, double err, double tol) {
    j[what] = {{"max_abs", err}, {"tolerance", tol}};
    if (!(err <= tol)) {
      ok = false;
      std::ostringstream s;
      s << what << " max abs " << err << " > " << tol;
      failures.push_back(s.str());
    }
  }
  void check_exact(const std::string& what, bool equal, const std::string& detail = "") {
    j[what] = equal ? json("ok") : json("MISMATCH " + detail);
    if (!equal) {
      ok = false;
      failures.push_back(what + " mismatch " + detail);
    }
  }
};

std::vector<int32_t> to_ids(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return std::vector<int32_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::string fmt(double v) {
  std::ostringstream s;
  s << std::scientific << std::setprecision(2) << v;
  return s.str();
}

}  // namespace

int run_parity(const ParityOptions& opt, std::ostream& out) {
  torch::NoGradGuard no_grad;
  const fs::path fx(opt.fixture_dir);
  json cases;
  try {
    std::ifstream f(fx / "cases.json");
    if (!f) throw ModelError(opt.fixture_dir + ": no cases.json (not a parity fixture folder)");
    cases = json::parse(f);
  } catch (const json::exception& e) {
    throw ModelError(opt.fixture_dir + "/cases.json: " + e.what());
  }
  const json& tol = cases.at("tolerances");
  const double s = opt.tolerance_scale;
  const double tol_pix = tol.at("pixel_values_abs").get<double>() * s;
  const double tol_enc = tol.at("encoder_stages_abs").get<double>() * s;
  const double tol_vis = tol.at("visual_embeds_abs").get<double>() * s;
  const double tol_hid = tol.at("prefill_hidden_abs").get<double>() * s;
  const double tol_log = tol.at("prefill_logits_abs").get<double>() * s;
  const double tol_top = tol.at("step_top5_scores_abs").get<double>() * s;
  const double margin_exempt = tol.at("greedy_margin_exempt_below").get<double>() * s;
  const int n_short = cases.value("n_new_tokens", 24);
  const int n_long = cases.value("n_new_tokens_long", 64);

  std::string model_dir = opt.model_dir;
  fs::path tmp;
  if (model_dir.empty()) {
    tmp = fs::temp_directory_path() / ("ocr-parity-" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    model_dir = export_fixture(opt.fixture_dir, (tmp / "model").string(), out);
  }
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      if (!p.empty()) remove_tree(p.string());
    }
  } cleanup{tmp};
  auto model = load_model(model_dir, opt.device, true);
  const Manifest& man = model->manifest;
  const int32_t image_id = man.tokens.image;

  json report = {{"fixture", cases.value("fixture", fx.filename().string())},
                 {"device", opt.device},
                 {"dtype", man.dtype},
                 {"tolerance_scale", s},
                 {"cases", json::array()}};
  int n_failed = 0;
  for (const json& c : cases.at("cases")) {
    CaseReport r;
    const std::string id = c.at("id").get<std::string>();
    const SafetensorsFile expected((fx / c.at("expected").get<std::string>()).string());
    auto lut_ref = read_tensor(expected, "normalize_lut");

    // Views from the input image, exactly as the official preprocessing.
    ModeSpec mode{c.at("mode").get<std::string>(), c.at("base_size").get<int>(), c.at("image_size").get<int>(),
                  c.at("crop_mode").get<bool>()};
    TilingOptions tiling;
    tiling.min_tiles = man.min_tiles;
    tiling.max_tiles = man.max_tiles;
    const ImageU8 image = load_image((fx / c.at("image").get<std::string>()).string());
    const Views views = make_views(image, mode, tiling);
    const int64_t n_img = count_image_tokens(mode, views.tiles_w, views.tiles_h, views.has_tiles());
    const auto crop = to_ids(read_tensor(expected, "images_spatial_crop"));
    r.check_exact("images_spatial_crop", crop.size() == 2 && crop[0] == views.tiles_w && crop[1] == views.tiles_h,
                  "ours [" + std::to_string(views.tiles_w) + "," + std::to_string(views.tiles_h) + "]");
    const auto ref_ids = to_ids(read_tensor(expected, "input_ids"));
    std::vector<int32_t> ids;
    try {
      ids = build_prompt_ids(model->tokenizer, c.at("prompt").get<std::string>(), n_img, man.tokens.bos, image_id);
    } catch (const std::exception& e) {
      r.check_exact("input_ids", false, e.what());
    }
    r.check_exact("input_ids", ids == ref_ids,
                  "(ours " + std::to_string(ids.size()) + " ids, reference " + std::to_string(ref_ids.size()) + ")");

    // uint8 views vs the reference PNGs, and pixel tensors vs normalize_lut[view].
    std::vector<ImageU8> ref_global, ref_tiles;
    int max_px_diff = 0;
    size_t tile_no = 0;
    bool views_match = true;
    for (const json& v : c.at("views")) {
      ImageU8 ref = load_image((fx / v.at("file").get<std::string>()).string());
      const bool is_tile = v.at("kind").get<std::string>() == "tile";
      const ImageU8* ours = is_tile ? (tile_no < views.tiles.size() ? &views.tiles[tile_no] : nullptr) : &views.global;
      if (!ours || ours->width != ref.width || ours->height != ref.height) {
        views_match = false;
      } else {
        for (size_t k = 0; k < ref.data.size(); ++k)
          max_px_diff = std::max(max_px_diff, std::abs(int(ref.data[k]) - int(ours->data[k])));
      }
      if (is_tile) {
        ++tile_no;
        ref_tiles.push_back(std::move(ref));
      } else {
        ref_global.push_back(std::move(ref));
      }
    }
    views_match = views_match && tile_no == views.tiles.size() && ref_global.size() == 1;
    r.check_exact("views_count_and_size", views_match);
    r.check("pixels_u8", max_px_diff, tol.at("pixels_u8").get<double>());
    auto lut_ours = torch::from_blob(model->pixel_lut.data(), {256}, torch::kFloat).clone();
    r.check("pixel_values", max_abs(lut_ours, lut_ref), tol_pix);
    if (ref_global.size() != 1) {
      r.failures.push_back("fixture case has no global view");
      r.ok = false;
    } else {
      // Encoder on the reference views (isolates it from preprocessing).
      auto run_stages = [&](const std::vector<ImageU8>& v) {
        std::vector<const ImageU8*> p;
        for (const auto& im : v) p.push_back(&im);
        auto pixels = views_to_pixels(p, model->pixel_lut).to(model->device);
        return model->encoder.get_method("stages")({pixels}).toTuple();
      };
      auto g = run_stages(ref_global);
      r.check("sam_out_global", max_abs(g->elements()[0].toTensor().cpu(), read_tensor(expected, "sam_out_global")), tol_enc);
      r.check("clip_out_global", max_abs(g->elements()[1].toTensor().cpu(), read_tensor(expected, "clip_out_global")), tol_enc);
      auto proj_g = g->elements()[2].toTensor();
      r.check("proj_out_global", max_abs(proj_g.cpu(), read_tensor(expected, "proj_out_global")), tol_enc);
      torch::Tensor proj_t = torch::empty({0}, proj_g.options());
      if (!ref_tiles.empty()) {
        auto t = run_stages(ref_tiles);
        r.check("sam_out_tiles", max_abs(t->elements()[0].toTensor().cpu(), read_tensor(expected, "sam_out_tiles")), tol_enc);
        r.check("clip_out_tiles", max_abs(t->elements()[1].toTensor().cpu(), read_tensor(expected, "clip_out_tiles")), tol_enc);
        proj_t = t->elements()[2].toTensor();
        r.check("proj_out_tiles", max_abs(proj_t.cpu(), read_tensor(expected, "proj_out_tiles")), tol_enc);
      }
      auto visual = model->encoder
                        .get_method("layout")({proj_g, proj_t, static_cast<int64_t>(crop.size() == 2 ? crop[0] : 1),
                                               static_cast<int64_t>(crop.size() == 2 ? crop[1] : 1)})
                        .toTensor();
      r.check("visual_embeds", max_abs(visual.cpu(), read_tensor(expected, "visual_embeds")), tol_vis);

      // Prefill with the reference ids.
      const int64_t n_ids = static_cast<int64_t>(ref_ids.size());
      auto cache = make_kv_cache(*model, 1, n_ids + n_long + 1);
      auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(model->device);
      auto h = embed_prompt(*model, ref_ids, visual).unsqueeze(0);
      auto slot = torch::zeros({1}, long_opts);
      auto pre = decoder_forward(*model, h, torch::arange(n_ids, long_opts).unsqueeze(0), cache, slot, n_ids,
                                 torch::full({1}, n_ids - 1, long_opts), true);
      auto prefill_logits = pre.logits[0].cpu().contiguous();
      r.check("prefill_hidden_last", max_abs(pre.hidden.select(1, 0).cpu(), read_tensor(expected, "prefill_hidden_last")), tol_hid);
      r.check("prefill_logits", max_abs(prefill_logits, read_tensor(expected, "prefill_logits")), tol_log);
      const torch::Tensor cache_after_prefill = cache.clone();

      // Generations: <g>_ids for every variant in the expected file; n from "ngramN".
      std::vector<std::string> variants;
      for (const auto& [name, entry] : expected.header().tensors) {
        const std::string suffix = "_step_top5_scores";
        if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
          variants.push_back(name.substr(0, name.size() - suffix.size()));
      }
      const std::regex ngram_re("ngram([0-9]+)");
      for (const std::string& var : variants) {
        std::smatch m;
        const int n = std::regex_search(var, m, ngram_re) ? std::stoi(m[1]) : 0;
        const auto ref_long = to_ids(read_tensor(expected, var + "_ids_long"));
        const auto ref_short = to_ids(read_tensor(expected, var + "_ids"));
        const auto margins = read_tensor(expected, var + "_step_margin");
        const auto ref_top5 = read_tensor(expected, var + "_step_top5_scores");
        const auto ref_banned = to_ids(read_tensor(expected, var + "_step_n_banned"));
        const int64_t vocab = prefill_logits.size(0);

        // (a) Free-running greedy generation with our cache, the token chosen as the engine does:
        // ocr::select_tokens on the model's device (HF no_repeat_ngram bans, then argmax).
        auto run_cache = cache_after_prefill.clone();
        StepState sel = make_step_state(*model, 1, n_ids + n_long + 1, 1);
        {
          auto prompt = torch::tensor(std::vector<int32_t>(ref_ids.begin(), ref_ids.end()), torch::kInt);
          sel.seq[0].narrow(0, 0, n_ids).copy_(prompt);
          sel.lens.fill_(static_cast<int32_t>(n_ids));
          auto p = torch::zeros({kernels::kSelectParams}, torch::kInt);
          p[kernels::kPromptLen] = static_cast<int32_t>(n_ids);
          p[kernels::kMaxNew] = static_cast<int32_t>(n_long);
          p[kernels::kNoRepeatN] = n;
          p[kernels::kState] = kernels::kGreedy;
          p[kernels::kEos] = man.tokens.eos;
          sel.params[0].copy_(p);
        }
        const auto row0 = torch::zeros({1}, long_opts);
        const auto no_force = torch::full({1}, -1, long_opts);
        std::vector<int32_t> gen;
        auto logits = prefill_logits.clone().to(model->device).unsqueeze(0).contiguous();
        for (int step = 0; step < n_long; ++step) {
          const int32_t tok = static_cast<int32_t>(select_tokens(logits, row0, sel, no_force).item<int64_t>());
          gen.push_back(tok);
          if (tok == man.tokens.eos) break;
          auto e = embed_ids(*model, torch::full({1, 1}, tok, long_opts));
          const int64_t pos = n_ids + step;
          logits = decoder_forward(*model, e, torch::full({1, 1}, pos, long_opts), run_cache, slot, pos + 1,
                                   torch::zeros({1}, long_opts))
                       .logits.contiguous();
        }
        auto compare_ids = [&](const std::vector<int32_t>& ref, const std::string& what) {
          size_t k = 0;
          while (k < ref.size() && k < gen.size() && ref[k] == gen[k]) ++k;
          if (k == ref.size()) {
            r.check_exact(what, true);
          } else if (k < static_cast<size_t>(margins.size(0)) && margins[k].item<double>() < margin_exempt) {
            r.j[what] = "diverged at step " + std::to_string(k) + " (excused: reference margin " +
                        fmt(margins[k].item<double>()) + ")";
          } else {
            r.check_exact(what, false, "first difference at step " + std::to_string(k));
          }
        };
        compare_ids(ref_short, var + "_ids");
        compare_ids(ref_long, var + "_ids_long");
        if (c.contains(var + "_text"))  // the reference text of the 24 ids, special tokens kept
          r.check_exact(var + "_text", model->tokenizer.decode(ref_short) == c.at(var + "_text").get<std::string>());

        // (b) Teacher forcing on the reference ids: top-5 scores after the ban, and ban counts.
        auto tf_cache = cache_after_prefill.clone();
        NoRepeatNgram tf_blocker(n);
        tf_blocker.reset(ref_ids);
        logits = prefill_logits.clone();
        const int64_t steps = std::min<int64_t>(ref_top5.size(0), static_cast<int64_t>(ref_long.size()));
        auto ours_top5 = torch::empty({steps, 5}, torch::kFloat);
        bool banned_equal = true;
        for (int64_t step = 0; step < steps; ++step) {
          std::vector<int32_t> banned;
          if (n > 0) banned = tf_blocker.banned();
          if (static_cast<int64_t>(banned.size()) != ref_banned[step]) banned_equal = false;
          apply_bans(logits.data_ptr<float>(), vocab, banned);
          ours_top5[step] = std::get<0>(logits.topk(5));
          const int32_t tok = ref_long[step];
          tf_blocker.push(tok);
          if (step + 1 == steps) break;
          auto e = embed_ids(*model, torch::full({1, 1}, tok, long_opts));
          const int64_t pos = n_ids + step;
          logits = decoder_forward(*model, e, torch::full({1, 1}, pos, long_opts), tf_cache, slot, pos + 1,
                                   torch::zeros({1}, long_opts))
                       .logits[0]
                       .cpu()
                       .contiguous();
        }
        r.check(var + "_step_top5_scores", max_abs(ours_top5, ref_top5.narrow(0, 0, steps)), tol_top);
        r.check_exact(var + "_step_n_banned", banned_equal);
      }
    }
    r.j["id"] = id;
    r.j["ok"] = r.ok;
    report["cases"].push_back(r.j);
    out << (r.ok ? "PASS " : "FAIL ") << id << "\n";
    for (auto it = r.j.begin(); it != r.j.end(); ++it) {
      if (it.key() == "id" || it.key() == "ok") continue;
      out << "  " << std::left << std::setw(34) << it.key() << " ";
      if (it.value().is_object())
        out << fmt(it.value()["max_abs"].get<double>()) << "  (tolerance " << fmt(it.value()["tolerance"].get<double>()) << ")";
      else
        out << it.value().get<std::string>();
      out << "\n";
    }
    for (const auto& f : r.failures) out << "  FAILED: " << f << "\n";
    if (!r.ok) ++n_failed;
  }
  const int n_cases = static_cast<int>(cases.at("cases").size());
  report["passed"] = n_cases - n_failed;
  report["failed"] = n_failed;
  if (!opt.json_path.empty()) std::ofstream(opt.json_path) << report.dump(1) << "\n";
  out << "parity: " << (n_cases - n_failed) << " passed, " << n_failed << " failed\n";
  return n_failed;
}

}  // namespace ocr
