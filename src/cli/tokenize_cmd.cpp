// `ocr-cli tokenize` / `ocr-cli detokenize`: the tokenizer on stdin/stdout, one line per item.
//
// tokenize input, per line (split on '\n' only): a line that is exactly one JSON object or one
// JSON string literal (a CR before the newline is ignored) is read as JSON: the object's "text"
// field (an error if it has none) or the string, the only way to pass text with newlines. Any
// other line, e.g. with spaces around the JSON or not JSON at all, is the text itself, CR kept.
// detokenize input, per line: a JSON array of ids, or a JSON object with an "ids" array.
#include <cstdint>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "ocr/errors.h"
#include "ocr/tokenizer.h"

namespace ocr::cli {
namespace {

using nlohmann::json;

// Parses one line of JSON; a line that does not parse gives a discarded value.
json parse_json_line(std::string_view line) {
  return json::parse(line.begin(), line.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
}

// Flushes when the reader has nothing buffered: interactive use sees each answer at once,
// piped batches are not slowed down by a flush per line.
void flush_if_idle(std::istream& in, std::ostream& out) {
  if (in.rdbuf()->in_avail() <= 0) out.flush();
}

std::string dump_text(const std::string& text) {
  // decode() output is valid UTF-8; `replace` only guards against a future regression.
  return json(text).dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

}  // namespace

int run_tokenize(const std::string& tokenizer_json, std::istream& in, std::ostream& out) {
  const Tokenizer tokenizer = Tokenizer::from_file(tokenizer_json);
  std::string line;
  std::vector<int32_t> ids;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    std::string text;
    bool from_json = false;
    std::string_view body = line;
    if (!body.empty() && body.back() == '\r') body.remove_suffix(1);
    const bool looks_json = body.size() >= 2 && ((body.front() == '{' && body.back() == '}') ||
                                                 (body.front() == '"' && body.back() == '"'));
    if (looks_json) {
      const json j = parse_json_line(body);
      if (j.is_object()) {
        auto it = j.find("text");
        if (it == j.end() || !it->is_string()) {
          std::cerr << "ocr-cli tokenize: line " << line_no
                    << ": a JSON object needs a string \"text\" field\n";
          return kExitFatal;
        }
        text = it->get<std::string>();
        from_json = true;
      } else if (j.is_string()) {
        text = j.get<std::string>();
        from_json = true;
      }
    }
    ids = tokenizer.encode(from_json ? std::string_view(text) : std::string_view(line));
    std::string row = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) row += ',';
      row += std::to_string(ids[i]);
    }
    row += "]\n";
    out << row;
    flush_if_idle(in, out);
  }
  out.flush();
  return out ? kExitOk : kExitFatal;
}

int run_detokenize(const std::string& tokenizer_json, bool skip_special, std::istream& in,
                   std::ostream& out) {
  const Tokenizer tokenizer = Tokenizer::from_file(tokenizer_json);
  std::string line;
  std::vector<int32_t> ids;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    const json j = parse_json_line(line);
    const json* array = &j;
    if (j.is_object()) {
      auto it = j.find("ids");
      array = it == j.end() ? nullptr : &*it;
    }
    auto fail = [&](const std::string& why) {
      std::cerr << "ocr-cli detokenize: line " << line_no << ": " << why << "\n";
      return kExitFatal;
    };
    if (array == nullptr || !array->is_array())
      return fail("expected a JSON array of ids or an object with an \"ids\" array");
    ids.clear();
    for (const json& v : *array) {
      // Ids are u32 in HF; those past the vocabulary (even past int32) decode to nothing.
      if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
        return fail("id " + v.dump() + " is not a non-negative integer");
      const uint64_t id = v.get<uint64_t>();
      if (id > UINT32_MAX) return fail("id " + v.dump() + " is larger than 2^32-1");
      if (id <= static_cast<uint64_t>(INT32_MAX)) ids.push_back(static_cast<int32_t>(id));
    }
    out << dump_text(tokenizer.decode(ids, skip_special)) << '\n';
    flush_if_idle(in, out);
  }
  out.flush();
  return out ? kExitOk : kExitFatal;
}

}  // namespace ocr::cli
