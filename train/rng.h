// A small deterministic random generator (SplitMix64) used by training, so
// that a seed gives the same run on every platform and standard library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace facevec::train {

class rng {
  public:
    explicit rng(uint64_t seed) : state_(seed) {}

    uint64_t next() {
        uint64_t z = (state_ += kIncrement);
        z = (z ^ (z >> kShiftA)) * kMultiplierA;
        z = (z ^ (z >> kShiftB)) * kMultiplierB;
        return z ^ (z >> kShiftC);
    }

    // Uniform in [0, 1), 53 random bits.
    double uniform() {
        return static_cast<double>(next() >> kDropBits) * kUnit;
    }

    // Uniform in [0, n). REQUIRES: n > 0. The modulo bias is below 2^-40
    // for the sizes used here.
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }

  private:
    static constexpr uint64_t kIncrement = 0x9e3779b97f4a7c15ULL;
    static constexpr uint64_t kMultiplierA = 0xbf58476d1ce4e5b9ULL;
    static constexpr uint64_t kMultiplierB = 0x94d049bb133111ebULL;
    static constexpr int kShiftA = 30;
    static constexpr int kShiftB = 27;
    static constexpr int kShiftC = 31;
    static constexpr int kDropBits = 11;
    static constexpr double kUnit = 1.0 / 9007199254740992.0;  // 2^-53
    uint64_t state_;
};

// Fisher-Yates shuffle driven by `r`.
template <typename Vector>
void shuffle(Vector &v, rng &r) {
    for (size_t i = v.size(); i > 1; --i) {
        size_t j = r.below(i);
        std::swap(v[i - 1], v[j]);
    }
}

}  // namespace facevec::train
