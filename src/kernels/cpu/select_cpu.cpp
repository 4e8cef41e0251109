// Reference implementation of ocr::select_tokens (schema: src/kernels/ops.cpp, fields:
// src/kernels/select.h). Plain loops: it is the CPU kernel and the oracle of the CUDA one. The ban
// rules are those of generate/ngram.h (the unit tests check the two agree).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/select.h"

namespace ocr::kernels {
namespace {

void check_select(const at::Tensor& logits, const at::Tensor& rows, const at::Tensor& seq, const at::Tensor& lens,
                  const at::Tensor& params, const at::Tensor& whitelist, const at::Tensor& forced,
                  const at::Tensor& next_ids, const at::Tensor& next_pos, const at::Tensor& emitted) {
  const int64_t m = logits.size(0), n_slots = seq.size(0);
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kFloat && logits.is_contiguous(),
              "select_tokens: logits must be contiguous float32 [m, vocab]");
  TORCH_CHECK(rows.dim() == 1 && rows.size(0) == m && rows.scalar_type() == at::kLong, "select_tokens: rows [m] int64");
  TORCH_CHECK(seq.dim() == 2 && seq.scalar_type() == at::kInt && seq.is_contiguous(), "select_tokens: seq [n_slots, max_len] int32");
  TORCH_CHECK(lens.dim() == 1 && lens.size(0) == n_slots && lens.scalar_type() == at::kInt && lens.is_contiguous(),
              "select_tokens: lens [n_slots] int32");
  TORCH_CHECK(params.dim() == 2 && params.size(0) == n_slots && params.size(1) == kSelectParams &&
                  params.scalar_type() == at::kInt && params.is_contiguous(),
              "select_tokens: params [n_slots, ", static_cast<int>(kSelectParams), "] int32");
  TORCH_CHECK(whitelist.dim() == 2 && whitelist.size(0) == n_slots && whitelist.scalar_type() == at::kInt &&
                  whitelist.is_contiguous(),
              "select_tokens: whitelist [n_slots, n_white] int32");
  TORCH_CHECK(forced.dim() == 1 && forced.size(0) == m && forced.scalar_type() == at::kLong, "select_tokens: forced [m] int64");
  TORCH_CHECK(next_ids.numel() == n_slots && next_ids.scalar_type() == at::kLong && next_ids.is_contiguous() &&
                  next_pos.numel() == n_slots && next_pos.scalar_type() == at::kLong && next_pos.is_contiguous(),
              "select_tokens: next_ids, next_pos [n_slots, 1] int64");
  TORCH_CHECK(emitted.dim() == 1 && emitted.size(0) == m && emitted.scalar_type() == at::kLong && emitted.is_contiguous(),
              "select_tokens: emitted [m] int64");
  for (const at::Tensor* t : {&rows, &seq, &lens, &params, &whitelist, &forced, &next_ids, &next_pos, &emitted})
    TORCH_CHECK(t->device() == logits.device(), "select_tokens: every tensor must be on the logits' device");
}

// Sets logits[t] = -inf for every banned t of one row.
void ban_row(float* logits, int64_t vocab, const int32_t* seq, int32_t len, const int32_t* p, const int32_t* white,
             int64_t n_white) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  auto ban = [&](int32_t t) {
    if (t >= 0 && t < vocab) logits[t] = kNegInf;
  };
  // HF no_repeat_ngram_size: every complete n-gram of prompt + generated whose first n-1 tokens
  // equal the last n-1 tokens bans its last token.
  const int32_t nr = p[kNoRepeatN];
  if (nr > 0 && len + 1 >= nr) {
    const int32_t* prefix = seq + len - (nr - 1);
    for (int32_t i = 0; i + nr <= len; ++i)
      if (std::equal(seq + i, seq + i + nr - 1, prefix)) ban(seq[i + nr - 1]);
  }
  // Windowed blocker over generated tokens, whitelist exempt.
  const int32_t ng = p[kNgramN];
  const int32_t gen = len - p[kPromptLen];
  if (ng > 0 && gen >= ng) {
    const int32_t* g = seq + p[kPromptLen];
    const int32_t* prefix = g + gen - (ng - 1);
    for (int32_t i = std::max<int32_t>(0, gen - p[kNgramWindow]); i + ng <= gen; ++i) {
      if (!std::equal(g + i, g + i + ng - 1, prefix)) continue;
      const int32_t t = g[i + ng - 1];
      if (std::find(white, white + n_white, t) == white + n_white) ban(t);
    }
  }
}

void select_tokens_cpu(at::Tensor logits, const at::Tensor& rows, at::Tensor seq, at::Tensor lens, at::Tensor params,
                       const at::Tensor& whitelist, const at::Tensor& forced, at::Tensor next_ids, at::Tensor next_pos,
                       at::Tensor emitted) {
  check_select(logits, rows, seq, lens, params, whitelist, forced, next_ids, next_pos, emitted);
  const int64_t m = logits.size(0), vocab = logits.size(1), n_slots = seq.size(0), max_len = seq.size(1);
  const int64_t n_white = whitelist.size(1);
  const auto rows_c = rows.contiguous(), forced_c = forced.contiguous();
  const int64_t* row_of = rows_c.data_ptr<int64_t>();
  const int64_t* force = forced_c.data_ptr<int64_t>();
  for (int64_t j = 0; j < m; ++j)
    TORCH_CHECK(row_of[j] >= 0 && row_of[j] < n_slots, "select_tokens: rows[", j, "] = ", row_of[j], " out of range");
  float* L = logits.data_ptr<float>();
  int32_t* S = seq.data_ptr<int32_t>();
  int32_t* lens_p = lens.data_ptr<int32_t>();
  int32_t* P = params.data_ptr<int32_t>();
  const int32_t* W = whitelist.data_ptr<int32_t>();
  int64_t* ids = next_ids.data_ptr<int64_t>();
  int64_t* pos = next_pos.data_ptr<int64_t>();
  int64_t* out = emitted.data_ptr<int64_t>();
  at::parallel_for(0, m, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t slot = row_of[j];
      int32_t* p = P + slot * kSelectParams;
      int32_t* s = S + slot * max_len;
      const int32_t len = lens_p[slot];
      float* row = L + j * vocab;
      if (p[kState] == kIdle || len >= max_len) {
        p[kState] = kIdle;
        out[j] = kEmittedIdle;
        pos[slot] = 0;  // an idle row's step attends one key, not its whole finished page
        continue;
      }
      int64_t tok = force[j];
      if (tok < 0) {
        ban_row(row, vocab, s, len, p, W + slot * n_white, n_white);
        if (p[kState] == kHostChoice) {
          out[j] = kEmittedHost;
          continue;
        }
        // Argmax over the non-NaN logits, lowest id on ties; a row of NaN gives id 0.
        int64_t best = -1;
        for (int64_t v = 0; v < vocab; ++v)
          if (!std::isnan(row[v]) && (best < 0 || row[v] > row[best])) best = v;
        tok = best < 0 ? 0 : best;
      }
      s[len] = static_cast<int32_t>(tok);
      lens_p[slot] = len + 1;
      out[j] = tok;
      ids[slot] = tok;
      // Position of the new token, fed at the next step; a finished row's later steps attend one key.
      const bool stop = tok == p[kEos] || len + 1 - p[kPromptLen] >= p[kMaxNew];
      pos[slot] = stop ? 0 : len;
      if (stop) p[kState] = kIdle;
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr, CPU, m) { m.impl("select_tokens", &select_tokens_cpu); }

}  // namespace ocr::kernels
