// One pass of the bulk Bernoulli sampler of ebmgraph.sampling: SplitMix64 words,
// 16-bit digits, the digit comparison and the search for ties, fused so that each
// unit is read and written once. The arithmetic is the same as the element-wise
// torch path, so both give the same values bit for bit.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kMix1 = 0xBF58476D1CE4E5B9ULL;
constexpr uint64_t kMix2 = 0x94D049BB133111EBULL;
constexpr int64_t kUnitsPerWord = 4;

inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

// Units [block * block_size, ...) of one tie block: out = clamp((p - k 2^-16) 2^16, 0, 1),
// and whether any of them is neither 0 nor 1 (a tie, or NaN).
template <typename scalar_t>
bool compare_block(const scalar_t* probs, scalar_t* out, int64_t begin, int64_t length, uint64_t key,
                   uint16_t* digits) {
  const uint64_t first_word = static_cast<uint64_t>(begin / kUnitsPerWord);
  const int64_t n_words = (length + kUnitsPerWord - 1) / kUnitsPerWord;
  for (int64_t w = 0; w < n_words; ++w) {
    const uint64_t word = splitmix64_mix(key + (first_word + static_cast<uint64_t>(w)) * kGamma);
    std::memcpy(digits + kUnitsPerWord * w, &word, sizeof(word));
  }

  const scalar_t scale = scalar_t(1.0 / 65536.0);
  const scalar_t inverse = scalar_t(65536.0);
  int tie = 0;
  for (int64_t u = 0; u < length; ++u) {
    scalar_t d = probs[begin + u] - static_cast<scalar_t>(digits[u]) * scale;
    d = std::min(std::max(d, scalar_t(0)), scale);
    const scalar_t value = d * inverse;
    out[begin + u] = value;
    tie |= static_cast<int>(value != scalar_t(0)) & static_cast<int>(value != scalar_t(1));
  }
  return tie != 0;
}

}  // namespace

void bernoulli_digits(const torch::Tensor& probs, torch::Tensor& out, torch::Tensor& tied, int64_t key,
                      int64_t block_size) {
  TORCH_CHECK(probs.is_cpu() && probs.is_contiguous() && out.is_contiguous(), "probs and out must be contiguous CPU tensors");
  TORCH_CHECK(out.scalar_type() == probs.scalar_type() && out.numel() == probs.numel(), "out must match probs");
  TORCH_CHECK(block_size > 0 && block_size % kUnitsPerWord == 0 && block_size <= 4096, "invalid block_size");
  const int64_t n_units = probs.numel();
  const int64_t n_blocks = (n_units + block_size - 1) / block_size;
  TORCH_CHECK(tied.scalar_type() == torch::kUInt8 && tied.is_contiguous() && tied.numel() >= n_blocks,
              "tied must be a contiguous uint8 tensor with one entry per block");

  AT_DISPATCH_FLOATING_TYPES(probs.scalar_type(), "bernoulli_digits", [&] {
    const scalar_t* p = probs.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    uint8_t* t = tied.data_ptr<uint8_t>();
    at::parallel_for(0, n_blocks, 16, [&](int64_t first, int64_t last) {
      uint16_t digits[4096];
      for (int64_t block = first; block < last; ++block) {
        const int64_t begin = block * block_size;
        const int64_t length = std::min(block_size, n_units - begin);
        t[block] = compare_block<scalar_t>(p, o, begin, length, static_cast<uint64_t>(key), digits);
      }
    });
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bernoulli_digits", &bernoulli_digits, "Fused SplitMix64 digits, comparison and tie flags");
}
