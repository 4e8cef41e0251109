// Dynamic tiling (spec 4.3): candidate grids in the official order and the closest-aspect choice.
//
// Upstream builds the candidates as a Python set of (i, j) tuples and stable-sorts it by i*j, so
// grids with equal products come out in CPython's set-iteration order. That order is a function of
// the tuple hashes and of the set's open-addressing table, both deterministic for small ints (no
// hash randomisation for ints and tuples). We replay CPython 3.8+'s tuple hash (xxHash-based) and
// 3.11's set insertion and resize rules, so any max_num gives the order Python gives.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ocr/preprocess.h"

namespace ocr {
namespace {

using Grid = std::pair<int, int>;

// Objects/tupleobject.c tuplehash for a tuple of two small non-negative ints (hash(int) == int).
uint64_t cpython_tuple_hash(int a, int b) {
  constexpr uint64_t kPrime1 = 11400714785074694791ULL;
  constexpr uint64_t kPrime2 = 14029467366897019727ULL;
  constexpr uint64_t kPrime5 = 2870177450012600261ULL;
  uint64_t acc = kPrime5;
  for (uint64_t lane : {static_cast<uint64_t>(a), static_cast<uint64_t>(b)}) {
    acc += lane * kPrime2;
    acc = (acc << 31) | (acc >> 33);
    acc *= kPrime1;
  }
  acc += 2ULL ^ (kPrime5 ^ 3527539ULL);
  if (acc == static_cast<uint64_t>(-1)) return 1546275796ULL;
  return acc;
}

// Objects/setobject.c (3.11): open addressing with 9 linear probes, then perturbed jumps.
class CPythonSet {
 public:
  void add(const Grid& key) {
    const uint64_t hash = cpython_tuple_hash(key.first, key.second);
    if (find_or_insert(table_, key, hash, /*insert_only=*/false)) return;
    ++used_;
    if (used_ * 5 >= mask() * 3) resize(used_ > 50000 ? used_ * 2 : used_ * 4);
  }
  // Iteration order: table slot order.
  std::vector<Grid> items() const {
    std::vector<Grid> out;
    for (const Slot& s : table_) {
      if (s.used) out.push_back(s.key);
    }
    return out;
  }

 private:
  static constexpr size_t kMinSize = 8;
  static constexpr size_t kLinearProbes = 9;
  static constexpr int kPerturbShift = 5;
  struct Slot {
    bool used = false;
    uint64_t hash = 0;
    Grid key;
  };

  size_t mask() const { return table_.size() - 1; }

  // Returns true when the key is already present; otherwise stores it in the first free slot.
  static bool find_or_insert(std::vector<Slot>& table, const Grid& key, uint64_t hash,
                             bool insert_only) {
    const size_t mask = table.size() - 1;
    size_t perturb = hash;
    size_t i = hash & mask;
    while (true) {
      size_t probes = (i + kLinearProbes <= mask) ? kLinearProbes : 0;
      size_t j = i;
      while (true) {
        Slot& s = table[j];
        if (!s.used) {
          s.used = true;
          s.hash = hash;
          s.key = key;
          return false;
        }
        if (!insert_only && s.hash == hash && s.key == key) return true;
        if (probes == 0) break;
        --probes;
        ++j;
      }
      perturb >>= kPerturbShift;
      i = (i * 5 + 1 + perturb) & mask;
    }
  }

  void resize(size_t min_used) {
    size_t new_size = kMinSize;
    while (new_size <= min_used) new_size <<= 1;
    std::vector<Slot> fresh(new_size);
    // No deletions ever happen here, so CPython takes its set_insert_clean path in slot order.
    for (const Slot& s : table_) {
      if (s.used) find_or_insert(fresh, s.key, s.hash, /*insert_only=*/true);
    }
    table_.swap(fresh);
  }

  std::vector<Slot> table_ = std::vector<Slot>(kMinSize);
  size_t used_ = 0;
};

}  // namespace

std::vector<std::pair<int, int>> tiling_candidates(int min_num, int max_num) {
  if (min_num < 1 || max_num < min_num) {
    throw std::invalid_argument("tiling_candidates: need 1 <= min_num <= max_num, got " +
                                std::to_string(min_num) + ".." + std::to_string(max_num));
  }
  // set((i, j) for n in range(min, max + 1) for i in range(1, n + 1) for j in range(1, n + 1)
  //     if min <= i * j <= max), in this insertion order.
  CPythonSet set;
  for (int n = min_num; n <= max_num; ++n) {
    for (int i = 1; i <= n; ++i) {
      for (int j = 1; j <= n; ++j) {
        if (i * j >= min_num && i * j <= max_num) set.add({i, j});
      }
    }
  }
  std::vector<Grid> grids = set.items();
  std::stable_sort(grids.begin(), grids.end(), [](const Grid& a, const Grid& b) {
    return a.first * a.second < b.first * b.second;
  });
  return grids;
}

std::pair<int, int> choose_tiling(int width, int height, int tile_size, int min_num, int max_num) {
  if (width <= 0 || height <= 0) {
    throw std::invalid_argument("choose_tiling: image size " + std::to_string(width) + "x" +
                                std::to_string(height) + " must be positive");
  }
  // find_closest_aspect_ratio: the first strictly closer ratio wins; on an exact tie the later
  // grid wins only when the image has more than half the grid's pixel area.
  const double aspect = static_cast<double>(width) / height;
  const double area = static_cast<double>(static_cast<int64_t>(width) * height);
  double best_diff = std::numeric_limits<double>::infinity();
  Grid best{1, 1};
  for (const Grid& g : tiling_candidates(min_num, max_num)) {
    const double diff = std::fabs(aspect - static_cast<double>(g.first) / g.second);
    if (diff < best_diff) {
      best_diff = diff;
      best = g;
    } else if (diff == best_diff) {
      // Python evaluates 0.5 * image_size * image_size * i * j left to right in doubles.
      if (area > 0.5 * tile_size * tile_size * g.first * g.second) best = g;
    }
  }
  return best;
}

}  // namespace ocr
