// Official prompts (spec 5.1) and the prompt-id layout (spec 5.2).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ocr/tokenizer.h"

namespace ocr {

// The official prompt of a task: markdown, ocr, free, figure, describe, locate (with `ref`).
// Throws std::invalid_argument for an unknown task or a locate without text.
std::string task_prompt(const std::string& task, const std::string& ref = "");

// Python's str.strip(): removes leading and trailing Unicode whitespace.
std::string python_strip(const std::string& s);

// The "plain" template: strip; split at the single "<image>"; encode each piece (added tokens
// recognised); the image-token run of n_image_tokens between them; BOS first; no EOS.
// Throws std::invalid_argument unless "<image>" occurs exactly once.
std::vector<int32_t> build_prompt_ids(const Tokenizer& tokenizer, const std::string& prompt,
                                      int64_t n_image_tokens, int32_t bos_id, int32_t image_id);

}  // namespace ocr
