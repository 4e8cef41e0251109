// Shared by the fuzz targets: a property check that stays on in release builds and aborts, so
// that libFuzzer records the input as a crash (a broken invariant is a finding like a segfault).
#pragma once

#include <cstdio>
#include <cstdlib>

#define OCR_FUZZ_CHECK(cond, what)                                                             \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::fprintf(stderr, "fuzz check failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, \
                   what);                                                                      \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)
