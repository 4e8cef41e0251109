// Subcommands of ocr-cli besides plain OCR. Each returns a process exit code (ocr::ExitCode).
#pragma once

#include <iosfwd>
#include <string>

namespace ocr::cli {

// `ocr-cli tokenize --model DIR`: one line of text in, one JSON array of ids out (special tokens
// recognised). Lines are split on '\n' only; escapes are not interpreted.
int run_tokenize(const std::string& tokenizer_json, std::istream& in, std::ostream& out);

// `ocr-cli detokenize --model DIR`: one JSON array of ids per line in, one JSON string out.
int run_detokenize(const std::string& tokenizer_json, bool skip_special, std::istream& in,
                   std::ostream& out);

}  // namespace ocr::cli
