// Subcommands of ocr-cli besides plain OCR. Each returns a process exit code (ocr::ExitCode).
#pragma once

#include <iosfwd>
#include <string>

namespace ocr::cli {

// `ocr-cli tokenize --model DIR`: one line in, one JSON array of ids out (special tokens
// recognised). A line that is one JSON string is that string (so texts may hold newlines); a JSON
// object gives its "text" field; any other line is the raw text (split on '\n' only).
int run_tokenize(const std::string& tokenizer_json, std::istream& in, std::ostream& out);

// `ocr-cli detokenize --model DIR`: one JSON array of ids per line in, one JSON string out.
int run_detokenize(const std::string& tokenizer_json, bool skip_special, std::istream& in,
                   std::ostream& out);

}  // namespace ocr::cli
