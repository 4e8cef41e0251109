// Encoding throughput of ocr::Tokenizer on one core, as JSON.
//
//   tokenizer_bench --tokenizer PATH/tokenizer.json [--corpus FILE.jsonl] [--mb 16] [--seed 1]
//
// The text is "mixed": documents assembled at random from the words of the tokenizer goldens
// (English prose, markdown, HTML tables, LaTeX, CJK, other scripts, emoji, digits), plus freshly
// generated CJK runs and digit strings so that the piece cache does not see only repeats. Each
// document (a few KB, like one OCR page) is one encode() call. A first pass warms the cache up.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "ocr/errors.h"
#include "ocr/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

// CPU time of this thread: on a shared machine it measures our work, not the neighbours'.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::vector<std::string> read_words(const std::string& corpus) {
  std::ifstream in(corpus);
  if (!in) throw std::runtime_error("cannot open corpus " + corpus);
  std::vector<std::string> words;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    const std::string text = j.is_object() ? j.at("text").get<std::string>() : line;
    // Words with the whitespace before them, so that documents keep the corpus's spacing.
    size_t start = 0;
    for (size_t i = 1; i <= text.size(); ++i) {
      if (i == text.size() || (text[i] == ' ' && text[i - 1] != ' ') || text[i] == '\n') {
        if (i > start) words.push_back(text.substr(start, i - start));
        start = i;
      }
    }
  }
  if (words.empty()) throw std::runtime_error("no text in corpus " + corpus);
  return words;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
  }
  out += static_cast<char>(0x80 | (cp & 0x3F));
}

std::vector<std::string> make_documents(const std::vector<std::string>& words, size_t total_bytes,
                                        uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> docs;
  size_t bytes = 0;
  while (bytes < total_bytes) {
    std::string doc;
    while (doc.size() < 4096) {
      const uint32_t r = rng() % 100;
      if (r < 85) {
        doc += words[rng() % words.size()];
      } else if (r < 92) {
        // A new CJK phrase: like real Chinese text, mostly unseen as a whole piece.
        doc += ' ';
        for (int k = 0, n = 2 + rng() % 12; k < n; ++k) append_utf8(doc, 0x4E00 + rng() % 0x5000);
      } else if (r < 97) {
        doc += ' ' + std::to_string(rng() % 1000000) + '.' + std::to_string(rng() % 100);
      } else {
        doc += "\n\n";
      }
    }
    bytes += doc.size();
    docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer_path, corpus;
  double mb = 16;
  uint32_t seed = 1;
  if (const char* shared = std::getenv("OCR_SHARED_DIR")) {
    tokenizer_path = std::string(shared) + "/fixtures/parity-a/tokenizer.json";
    corpus = std::string(shared) + "/fixtures/tokenizer/deepseek_v3_ocr_encode.jsonl";
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--tokenizer")
      tokenizer_path = value;
    else if (key == "--corpus")
      corpus = value;
    else if (key == "--mb")
      mb = std::stod(value);
    else if (key == "--seed")
      seed = static_cast<uint32_t>(std::stoul(value));
    else {
      std::cerr << "unknown option " << key << "\n";
      return 2;
    }
  }
  if (tokenizer_path.empty() || corpus.empty()) {
    std::cerr << "usage: tokenizer_bench --tokenizer tokenizer.json --corpus encode.jsonl "
                 "[--mb 16] [--seed 1] (or set OCR_SHARED_DIR)\n";
    return 2;
  }
  try {
    const auto t_load = Clock::now();
    const ocr::Tokenizer tokenizer = ocr::Tokenizer::from_file(tokenizer_path);
    const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
    const auto docs = make_documents(read_words(corpus), static_cast<size_t>(mb * 1e6), seed);

    size_t n_bytes = 0, n_tokens = 0;
    for (size_t i = 0; i < std::min<size_t>(docs.size(), 16); ++i) tokenizer.encode(docs[i]);
    const auto t0 = Clock::now();
    const double cpu0 = thread_cpu_seconds();
    for (const std::string& doc : docs) {
      n_bytes += doc.size();
      n_tokens += tokenizer.encode(doc).size();
    }
    const double cpu_seconds = thread_cpu_seconds() - cpu0;
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

    // Decoding, for completeness: the same ids back to text.
    std::vector<std::vector<int32_t>> encoded;
    for (size_t i = 0; i < std::min<size_t>(docs.size(), 256); ++i)
      encoded.push_back(tokenizer.encode(docs[i]));
    size_t decoded_bytes = 0;
    const auto t1 = Clock::now();
    for (const auto& ids : encoded) decoded_bytes += tokenizer.decode(ids).size();
    const double decode_s = std::chrono::duration<double>(Clock::now() - t1).count();

    nlohmann::json out = {
        {"bytes", n_bytes},
        {"seconds", seconds},
        {"mb_per_s", n_bytes / 1e6 / seconds},
        {"cpu_seconds", cpu_seconds},
        {"mb_per_s_cpu", n_bytes / 1e6 / cpu_seconds},
        {"tokens", n_tokens},
        {"bytes_per_token", static_cast<double>(n_bytes) / n_tokens},
        {"documents", docs.size()},
        {"threads", 1},
        {"load_seconds", load_s},
        {"decode_mb_per_s", decoded_bytes / 1e6 / decode_s},
        {"target_mb_per_s", 10.0},
    };
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "tokenizer_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
