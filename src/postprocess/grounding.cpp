#include "postprocess/grounding.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>

#include "engine/prompt.h"

namespace ocr {

namespace {

const std::string kRef = "<|ref|>";
const std::string kRefDet = "<|/ref|><|det|>";
const std::string kDetEnd = "<|/det|>";

std::vector<std::array<int, 4>> parse_boxes(const std::string& det) {
  std::vector<std::array<int, 4>> boxes;
  std::vector<long> nums;
  int depth = 0;
  for (size_t i = 0; i < det.size();) {
    const char c = det[i];
    if (c == '[') {
      ++depth;
      nums.clear();
      ++i;
    } else if (c == ']') {
      // Saturated to int (a plain narrowing would wrap 4294967796 to 500, a wrong box).
      auto clamp = [](long v) { return static_cast<int>(std::clamp<long>(v, INT_MIN, INT_MAX)); };
      if (nums.size() == 4)
        boxes.push_back({clamp(nums[0]), clamp(nums[1]), clamp(nums[2]), clamp(nums[3])});
      nums.clear();
      --depth;
      ++i;
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      char* end = nullptr;
      const long v = std::strtol(det.c_str() + i, &end, 10);
      const size_t used = static_cast<size_t>(end - (det.c_str() + i));
      if (used == 0) {
        ++i;
        continue;
      }
      if (depth > 0) nums.push_back(v);
      i += used;
    } else {
      ++i;
    }
  }
  return boxes;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
}

}  // namespace

std::vector<GroundingBlock> find_grounding(const std::string& text) {
  std::vector<GroundingBlock> out;
  size_t pos = 0;
  while (true) {
    const size_t i = text.find(kRef, pos);
    if (i == std::string::npos) break;
    // Non-greedy: the first "<|/ref|><|det|>" after the start, then the first "<|/det|>".
    const size_t j = text.find(kRefDet, i + kRef.size());
    if (j == std::string::npos) break;
    const size_t k = text.find(kDetEnd, j + kRefDet.size());
    if (k == std::string::npos) break;
    GroundingBlock b;
    b.begin = i;
    b.end = k + kDetEnd.size();
    b.label = text.substr(i + kRef.size(), j - i - kRef.size());
    b.det = text.substr(j + kRefDet.size(), k - j - kRefDet.size());
    b.boxes = parse_boxes(b.det);
    out.push_back(std::move(b));
    pos = k + kDetEnd.size();
  }
  return out;
}

std::string clean_markdown(const std::string& raw, const std::string& eos_text,
                           const std::function<std::string(int)>& image_link) {
  std::string text = raw;
  if (!eos_text.empty() && text.size() >= eos_text.size() &&
      text.compare(text.size() - eos_text.size(), eos_text.size(), eos_text) == 0)
    text.resize(text.size() - eos_text.size());
  text = python_strip(text);
  std::string out;
  size_t pos = 0;
  int image_index = 0;
  for (const auto& b : find_grounding(text)) {
    out.append(text, pos, b.begin - pos);
    if (text.substr(b.begin, b.end - b.begin).find("<|ref|>image<|/ref|>") != std::string::npos)
      out += image_link ? image_link(image_index++) : std::string();
    pos = b.end;
  }
  out.append(text, pos, std::string::npos);
  replace_all(out, "\\coloneqq", ":=");
  replace_all(out, "\\eqqcolon", "=:");
  return out;
}

std::array<int, 4> grid_box_to_pixels(const std::array<int, 4>& box, int width, int height) {
  // int(coord / 999 * side), saturated: a runaway coordinate such as 99999999999 would overflow
  // the conversion (undefined behaviour; found by fuzzing).
  auto px = [](int coord, int side) {
    const double v = coord / 999.0 * side;
    if (v >= static_cast<double>(INT_MAX)) return INT_MAX;
    if (v <= static_cast<double>(INT_MIN)) return INT_MIN;
    return static_cast<int>(v);
  };
  return {px(box[0], width), px(box[1], height), px(box[2], width), px(box[3], height)};
}

}  // namespace ocr
