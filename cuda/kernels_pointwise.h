// Launchers of the elementwise kernels (kernels_pointwise.cu): arithmetic, comparisons, Where,
// Cast and unary math over storage dtypes, and the strided copy the layout ops share. Plain
// types only, so the host compiler (C++20) and nvcc (C++17) both read this header; every
// launcher queues its work on the default stream and returns the launch's cudaError_t (0 when
// ok, cudaErrorInvalidValue for a dtype combination that has no kernel).
#pragma once

#include <cstdint>

namespace kfleet::cuda::pointwise {

inline constexpr int kMaxRank = 8;
inline constexpr int kThreads = 256;

// Element types as the device stores them (cuda::StorageDtype).
enum class Elem : int8_t { kF32, kF16, kBF16, kI64, kBool };

// How up to three operands map onto a dense output: output element with index (i_0, ..., i_r-1)
// reads operand k at element sum(i_d * strides[k][d]). Dims outermost first, strides in elements
// (0 on broadcast dims, negative for reversed slices).
struct ElementIndex {
  int rank = 1;
  int64_t dims[kMaxRank] = {};
  int64_t strides[3][kMaxRank] = {};
  // Every operand is laid out exactly as the output: the flat, vectorized path.
  bool dense = false;

  int64_t elements() const {
    int64_t n = 1;
    for (int d = 0; d < rank; ++d) n *= dims[d];
    return n;
  }
};

// Division by a fixed divisor in [1, 2^31) of numerators below 2^31 with a multiply-high, add
// and shift: q = (umulhi(n, magic) + n) >> shift, magic = 2^32 * (2^shift - d) / d + 1.
struct FastDivmod {
  uint32_t divisor = 1;
  uint32_t magic = 1;
  uint32_t shift = 0;
};

inline FastDivmod MakeFastDivmod(uint32_t divisor) {
  FastDivmod f;
  f.divisor = divisor;
  while ((uint64_t{1} << f.shift) < divisor) ++f.shift;
  f.magic = static_cast<uint32_t>(
      ((uint64_t{1} << 32) * ((uint64_t{1} << f.shift) - divisor)) / divisor + 1);
  return f;
}

#if defined(__CUDACC__)
__device__ __forceinline__ uint32_t Quotient(const FastDivmod& f, uint32_t n) {
  return (__umulhi(n, f.magic) + n) >> f.shift;
}
#endif

// Blocks of kThreads for `work` items in a grid-stride loop: enough to fill every SM a few
// times over, never more than the work needs, at least one.
int GridBlocks(int64_t work);

enum class UnaryOp : int8_t {
  kIdentity,
  kNeg,
  kAbs,
  kRelu,
  kSqrt,
  kReciprocal,
  kExp,
  kLog,
  kErf,
  kTanh,
  kSigmoid,
  kLeakyRelu,    // alpha
  kGelu,         // erf form
  kGeluTanh,     // tanh approximation
  kHardSigmoid,  // alpha, beta
  kHardSwish,
  kSoftplus,
  kCos,
  kSin,
  kSquare,
  kCube,
  kNot,    // bool -> bool
  kIsNaN,  // float -> bool
};

struct UnaryParams {
  float alpha = 0;
  float beta = 0;
};

// y = op(x) over `n` elements. Floating ops need in == out in {f32, f16, bf16}; Neg, Abs and Relu
// also take i64; Not is bool -> bool, IsNaN float -> bool.
int LaunchUnary(UnaryOp op, Elem in, Elem out, const void* x, void* y, int64_t n,
                UnaryParams params);

// Integer widths a Cast wraps to (held in i64).
enum class IntWrap : int8_t { kNone, kI32, kI16, kI8, kU8 };

// y = Cast(x) over `n` elements between any two storage types: floats round once, floats to
// integers truncate (NaN -> 0, saturating beyond +-9.2e18) then wrap, anything to bool is "!= 0".
int LaunchCast(Elem in, Elem out, IntWrap wrap, const void* x, void* y, int64_t n);

// The bounds Clip uses where its min / max inputs are omitted: attributes before opset 11, else
// none (the type's lowest / highest value, which never changes an element).
struct ClipDefaults {
  double lo = 0;
  double hi = 0;
  bool has_lo = false;
  bool has_hi = false;
};

// y = min(max(x, lo), hi) over `n` elements of `type` (f32, f16, bf16, i64). `lo` / `hi` point at
// one device element of `type`, or are null to use `defaults`.
int LaunchClip(Elem type, const void* x, const void* lo, const void* hi, ClipDefaults defaults,
               void* y, int64_t n);

enum class BinaryOp : int8_t {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kPow,
  kMax,
  kMin,
  kEqual,
  kLess,
  kGreater,
  kLessOrEqual,
  kGreaterOrEqual,
  kAnd,
  kOr,
};

// z = op(x, y) with x, y broadcast per `index` (operands 0 and 1). Arithmetic needs a == b == out
// (not bool); Pow takes a and b in {f32, f16, bf16, i64} with out == a; comparisons a == b with a
// bool out; And / Or bool only.
int LaunchBinary(BinaryOp op, Elem a, Elem b, Elem out, const void* x, const void* y, void* z,
                 const ElementIndex& index);

// out = cond ? x : y per `index` (operands 0, 1, 2): cond bool, x / y / out elements of
// `elem_bytes` (1, 2, 4 or 8).
int LaunchWhere(int elem_bytes, const void* cond, const void* x, const void* y, void* out,
                const ElementIndex& index);

// out (dense) = x read through `index` (operand 0), elements of `elem_bytes` (1, 2, 4 or 8).
// Rows that are contiguous in x move as 16-byte units where sizes and pointers allow.
int LaunchCopy(int elem_bytes, const void* x, void* out, const ElementIndex& index);

}  // namespace kfleet::cuda::pointwise
