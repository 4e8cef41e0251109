// Generic parity checker against fixtures laid out like shared/fixtures/parity-a (see its README):
// every case of cases.json, every stage, against the official reference implementation's numbers.
#pragma once

#include <iosfwd>
#include <string>

namespace ocr {

struct ParityOptions {
  std::string fixture_dir;
  std::string model_dir;      // exported model; empty: export the fixture checkpoint (fp32) to a temp dir
  std::string device = "cpu";
  std::string json_path;      // also write the report as JSON here
  double tolerance_scale = 1; // >1 only for reduced-precision (bf16) runs, stated in the report
};

// Runs every case; prints a per-case, per-stage report to `out`. Returns the number of failed
// cases (0 = every check within the fixture's tolerances). Throws ocr::ModelError if the fixture
// or model cannot be read.
int run_parity(const ParityOptions& options, std::ostream& out);

}  // namespace ocr
