// Errors are exceptions inside, exit codes outside (see README "Exit codes").
#pragma once

#include <stdexcept>
#include <string>

namespace ocr {

// A problem with one input (unreadable, corrupt, too large): the batch goes on.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A problem with the model folder or the device: nothing can be processed.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The run was interrupted (SIGINT/SIGTERM): in-flight pages are dropped, nothing partial written.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Process exit codes, documented in --help and README.
enum ExitCode : int {
  kExitOk = 0,           // every page succeeded
  kExitFatal = 1,        // model, device or other fatal error
  kExitUsage = 2,        // bad command line
  kExitPageFailed = 3,   // some pages or files failed, the rest were written
  kExitInterrupted = 130 // SIGINT/SIGTERM; nothing partial written, a rerun resumes
};

}  // namespace ocr
