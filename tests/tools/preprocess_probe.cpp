// Command-line access to decoding and Pillow-exact preprocessing, for
// tests/unit/test_pillow_parity.py.
//
//   preprocess_probe resize IN W H OUT.png
//   preprocess_probe pad IN SIZE OUT.png [FILL]
//   preprocess_probe views IN MODE OUTDIR [MAX_TILES]   -> JSON line; writes view_global.png,
//   view_tile_NN.png preprocess_probe candidates MIN MAX                 -> JSON line [[i,j],...]
//   preprocess_probe tiling MIN MAX TILE                -> reads "W H" lines on stdin, writes "w_t
//   h_t" lines preprocess_probe decode IN OUT.png [--no-exif] [--max-pixels N] preprocess_probe
//   bench IN MODE REPEATS              -> JSON line with make_views milliseconds preprocess_probe
//   batch    reads one command per stdin line (the forms above, except tiling,
//                             decode from stdin and batch), prints its output and then
//                             "@@end RC MESSAGE"; saves a process start (OpenCV loads slowly) per
//                             case
// Input errors print one line to stderr and exit 3; usage errors exit 2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ocr/errors.h"
#include "ocr/image_io.h"
#include "ocr/preprocess.h"

namespace {

double thread_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

int usage() {
  std::fprintf(stderr,
               "usage: preprocess_probe resize IN W H OUT | pad IN SIZE OUT [FILL] | views IN MODE "
               "OUTDIR [MAX] | candidates MIN MAX | tiling MIN MAX TILE | decode IN OUT "
               "[--no-exif] [--max-pixels N] | bench IN MODE REPEATS\n");
  return 2;
}

int run(const std::vector<std::string>& a);

// Runs one command and maps exceptions to the exit codes of main(); `error` gets the message.
int run_guarded(const std::vector<std::string>& args, std::string& error) {
  try {
    return run(args);
  } catch (const ocr::InputError& e) {
    error = e.what();
    return 3;
  } catch (const std::exception& e) {
    error = std::string("error: ") + e.what();
    return 1;
  }
}

int run(const std::vector<std::string>& a) {
  const std::string& cmd = a[0];
  if (cmd == "batch" && a.size() == 1) {
    std::string line;
    while (std::getline(std::cin, line)) {
      std::istringstream words(line);
      std::vector<std::string> args;
      for (std::string w; words >> w;) args.push_back(w);
      if (args.empty()) continue;
      std::string error;
      const bool reads_stdin = args[0] == "batch" || args[0] == "tiling" ||
                               (args[0] == "decode" && args.size() > 1 && args[1] == "-");
      const int rc = reads_stdin ? usage() : run_guarded(args, error);
      std::cout << "@@end " << rc << ' ' << error << std::endl;
    }
    return 0;
  }
  if (cmd == "resize" && a.size() == 5) {
    const ocr::ImageU8 in = ocr::load_image(a[1]);
    ocr::save_png(ocr::pillow_resize_bicubic(in, std::stoi(a[2]), std::stoi(a[3])), a[4]);
    return 0;
  }
  if (cmd == "pad" && (a.size() == 4 || a.size() == 5)) {
    const ocr::ImageU8 in = ocr::load_image(a[1]);
    const int fill = a.size() == 5 ? std::stoi(a[4]) : 127;
    ocr::save_png(ocr::pillow_pad(in, std::stoi(a[2]), static_cast<uint8_t>(fill)), a[3]);
    return 0;
  }
  if (cmd == "views" && (a.size() == 4 || a.size() == 5)) {
    const ocr::ImageU8 in = ocr::load_image(a[1]);
    const ocr::ModeSpec& mode = ocr::find_mode(ocr::builtin_modes(), a[2]);
    ocr::TilingOptions tiling;
    if (a.size() == 5) tiling.max_tiles = std::stoi(a[4]);
    const ocr::Views v = ocr::make_views(in, mode, tiling);
    ocr::save_png(v.global, a[3] + "/view_global.png");
    for (size_t k = 0; k < v.tiles.size(); ++k) {
      char name[48];
      std::snprintf(name, sizeof(name), "/view_tile_%02zu.png", k);
      ocr::save_png(v.tiles[k], a[3] + name);
    }
    nlohmann::json j = {
        {"tiles_w", v.tiles_w},
        {"tiles_h", v.tiles_h},
        {"n_tiles", v.tiles.size()},
        {"global", {v.global.width, v.global.height}},
        {"image_tokens", ocr::count_image_tokens(mode, v.tiles_w, v.tiles_h, v.has_tiles())}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  if (cmd == "candidates" && a.size() == 3) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& [i, k] : ocr::tiling_candidates(std::stoi(a[1]), std::stoi(a[2]))) {
      j.push_back({i, k});
    }
    std::cout << j.dump() << "\n";
    return 0;
  }
  if (cmd == "tiling" && a.size() == 4) {
    const int min_num = std::stoi(a[1]), max_num = std::stoi(a[2]), tile = std::stoi(a[3]);
    int w = 0, h = 0;
    while (std::cin >> w >> h) {
      const auto [wt, ht] = ocr::choose_tiling(w, h, tile, min_num, max_num);
      std::cout << wt << ' ' << ht << '\n';
    }
    return 0;
  }
  if (cmd == "decode" && a.size() >= 3) {
    ocr::DecodeOptions opt;
    for (size_t i = 3; i < a.size(); ++i) {
      if (a[i] == "--no-exif") {
        opt.apply_exif_orientation = false;
      } else if (a[i] == "--max-pixels" && i + 1 < a.size()) {
        opt.max_pixels = std::stoll(a[++i]);
      } else {
        return usage();
      }
    }
    ocr::save_png(ocr::load_image(a[1], opt), a[2]);
    return 0;
  }
  if (cmd == "bench" && a.size() == 4) {
    const ocr::ImageU8 in = ocr::load_image(a[1]);
    const ocr::ModeSpec& mode = ocr::find_mode(ocr::builtin_modes(), a[2]);
    const int repeats = std::stoi(a[3]);
    ocr::make_views(in, mode);  // warm-up
    // Wall and thread CPU time: on a shared machine the CPU time is the figure that reproduces.
    double best_wall = 1e30, best_cpu = 1e30, total_wall = 0;
    for (int r = 0; r < repeats; ++r) {
      const double c0 = thread_cpu_ms();
      const auto t0 = std::chrono::steady_clock::now();
      const ocr::Views v = ocr::make_views(in, mode);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      best_cpu = std::min(best_cpu, thread_cpu_ms() - c0);
      best_wall = std::min(best_wall, ms);
      total_wall += ms;
    }
    std::cout << nlohmann::json{{"image", {in.width, in.height}},
                                {"mode", mode.name},
                                {"repeats", repeats},
                                {"best_ms", best_wall},
                                {"mean_ms", total_wall / repeats},
                                {"best_cpu_ms", best_cpu}}
                     .dump()
              << "\n";
    return 0;
  }
  return usage();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::vector<std::string> args(argv + 1, argv + argc);
  std::string error;
  const int rc = run_guarded(args, error);
  if (!error.empty()) std::fprintf(stderr, "%s\n", error.c_str());
  return rc;
}
