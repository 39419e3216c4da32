// "cuda_attention": softmax(Q K^T * scale + mask) V as one flash-attention kernel. A block owns
// block_m query rows of one (batch, head) and walks the keys in tiles of block_n staged in shared
// memory; its warps split the rows (16 per mma slab) and the keys of a tile, each warp keeping an
// online softmax (running max, running sum, rescaled accumulator) over its keys, merged in a fixed
// order at the end, so results are bitwise reproducible. f16 / bf16 multiply on tensor cores
// (mma.sync m16n8k16, f32 accumulation) or with f32 FMA; f32 uses FMA.
#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "agents/attention_analysis.h"
#include "agents/cuda_templates.h"

namespace kfleet::agents {
namespace {

using planner::DType;

// What an H100 / H200 block may opt into.
constexpr int64_t kMaxSharedBytes = 227 * 1024;
constexpr int kMaxHeadDim = 256;

// Replaces every "$NAME" of `text` with its value; keeps the CUDA source below readable without
// fmt's brace escaping. Longer names go first where one is a prefix of another.
std::string Subst(std::string text, const std::vector<std::pair<std::string, std::string>>& vars) {
  for (const auto& [name, value] : vars) {
    for (size_t at = text.find(name); at != std::string::npos;
         at = text.find(name, at + value.size())) {
      text.replace(at, name.size(), value);
    }
  }
  return text;
}

std::string CudaType(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return "__half";
    case DType::kBF16:
      return "__nv_bfloat16";
    case DType::kBool:
      return "unsigned char";
    default:
      return "float";
  }
}

std::string KfType(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return "KF_F16";
    case DType::kBF16:
      return "KF_BF16";
    case DType::kBool:
      return "KF_BOOL";
    default:
      return "KF_F32";
  }
}

// The head dim the kernel is compiled for: a multiple of 16 (one mma k-step).
int PaddedHeadDim(int64_t head_dim) {
  return static_cast<int>(std::max<int64_t>(16, (head_dim + 15) / 16 * 16));
}

struct Config {
  int block_m = 16;
  int block_n = 64;
  int warps = 4;
  int warps_m = 1;  // warps along the query rows
  int slabs = 1;    // 16-row mma slabs per warp
  int warps_n = 1;  // warps along the keys of a tile
  int warp_n = 64;  // keys per warp per tile
  bool mma = false;
  std::vector<int> head_dims;  // padded head dims compiled, ascending
};

// Shared memory of one block with one stage of K and V, as the kernel lays it out (Layout).
int64_t SharedBytes(const Config& c, int dpad, int64_t elem_bytes, const AttentionPlan& plan) {
  const int64_t row = (dpad + 16 / elem_bytes) * elem_bytes;
  const int64_t region = std::max<int64_t>(2 * c.block_n * row, c.block_m * (dpad + 4) * 4);
  const int64_t step = std::min(c.warp_n, 32);
  const int64_t probabilities = c.mma ? 0 : int64_t{c.warps} * 16 * c.slabs * (step + 1) * 4;
  int64_t operands = 0;
  for (const ScoreOperand& op : plan.operands) {
    operands += c.block_m * (c.block_n * planner::DTypeBytes(op.dtype) + 16);
  }
  return c.block_m * row + region + operands + probabilities +
         int64_t{2} * c.warps_n * c.block_m * 4;
}

Result<Config> MakeConfig(const AttentionPlan& plan, const Params& params) {
  Config c;
  c.block_m = std::stoi(params.at("block_m"));
  c.block_n = std::stoi(params.at("block_n"));
  c.warps = std::stoi(params.at("warps"));
  c.mma = params.count("mma") != 0 && params.at("mma") == "on";
  c.warps_m = std::min(c.warps, c.block_m / 16);
  c.slabs = c.block_m / 16 / c.warps_m;
  c.warps_n = c.warps / c.warps_m;
  c.warp_n = c.block_n / c.warps_n;
  if (c.warp_n < 16) {
    return InvalidArgument(fmt::format(
        "block_n {} split over {} warps along the keys leaves {} keys per warp; the kernel needs "
        "16 or more (fewer warps or a larger block_n)",
        c.block_n, c.warps_n, c.warp_n));
  }
  const int dpad = PaddedHeadDim(plan.head_dim);
  if (c.slabs * dpad > 256) {
    return InvalidArgument(
        fmt::format("{} query rows per warp with head dim {} hold more accumulators than a "
                    "thread has registers (more warps or a smaller block_m)",
                    16 * c.slabs, dpad));
  }
  const int64_t shared = SharedBytes(c, dpad, planner::DTypeBytes(plan.dtype), plan);
  if (shared > kMaxSharedBytes) {
    return InvalidArgument(fmt::format(
        "block_m {} and block_n {} at head dim {} need {} bytes of shared memory, over {}",
        c.block_m, c.block_n, dpad, shared, kMaxSharedBytes));
  }
  c.head_dims = {dpad};
  // A head dim read at run time may change; the doubled one gets its own instance.
  const int doubled = PaddedHeadDim(2 * plan.head_dim);
  if (!plan.head_dim_fixed && doubled <= kMaxHeadDim && doubled != dpad) {
    c.head_dims.push_back(doubled);
  }
  return c;
}

constexpr const char* kPrelude = R"(#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <stdint.h>

#include "kfleet/kernel.h"

namespace {

typedef $ELEM elem_t;  // Q, K, V
typedef $OUT out_t;

constexpr int kBlockM = $BLOCK_M;            // query rows per block
constexpr int kBlockN = $BLOCK_N;            // keys per shared-memory tile
constexpr int kWarps = $WARPS;
constexpr int kWarpsM = $WARPS_M;            // warps along the query rows
constexpr int kWarpsN = kWarps / kWarpsM;    // warps along the keys, merged at the end
constexpr int kMs = kBlockM / 16 / kWarpsM;  // 16-row slabs per warp
constexpr int kWarpN = kBlockN / kWarpsN;    // keys per warp per tile
constexpr int kOperands = $OPERANDS;
constexpr bool kZeroMaskedRows = $ZERO_ROWS;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void FromFloat(float x, float* y) { *y = x; }
__device__ __forceinline__ void FromFloat(float x, __half* y) { *y = __float2half_rn(x); }
__device__ __forceinline__ void FromFloat(float x, __nv_bfloat16* y) { *y = __float2bfloat16_rn(x); }

// Q, K or V: element (s, d) of head (b, h) at p[b * sb + h * sh + s * ss + d * sd].
struct HeadView {
  const elem_t* p;
  long long sb, sh, ss, sd;
  bool vec;  // sd == 1 and every row 16-byte aligned: rows load in 16-byte pieces
};

// A score operand broadcast to [batch, heads, seq_q, seq_kv] (stride 0 where it repeats).
struct OperandView {
  const void* p;
  long long stride[4];
  bool staged;  // contiguous along the keys and 16-byte aligned: tiles go through shared memory
};

struct Args {
  HeadView q, k, v;
  OperandView ops[kOperands > 0 ? kOperands : 1];
  out_t* out;
  long long out_sb, out_sh, out_ss;  // the head dim is contiguous
  int heads, sq, skv, d;
};

// A staged operand's [kBlockM x kBlockN] window of a tile: rows of OpRowBytes(k), operands one
// after the other.
__host__ __device__ constexpr int OpBytes(int k) { return $OP_BYTES; }
__host__ __device__ constexpr size_t OpRowBytes(int k) { return size_t(kBlockN) * OpBytes(k) + 16; }
__host__ __device__ constexpr size_t OpOffset(int k) {
  size_t offset = 0;
  for (int i = 0; i < k; ++i) offset += kBlockM * OpRowBytes(i);
  return offset;
}

// The spec's ops between Q K^T and the softmax on score `s` of query i, key j (row ti, key tj of
// the block's tile, whose staged operands are at `tile`); `base` holds each operand's offset of the
// block's (batch, head).
__device__ __forceinline__ float Score(float s, const Args& a, const long long* base,
                                       const unsigned char* tile, int i, int j, int ti, int tj) {
$SCORE_BODY  return s;
}

// A shared-memory row of Q, K or V holds the padded head dim and 16 bytes more: rows stay 16-byte
// aligned and consecutive rows start in different banks.
template <int kDPad>
struct Row {
  static constexpr int kLd = kDPad + 16 / int(sizeof(elem_t));  // elements
  static constexpr int kLdO = kDPad + 4;                         // floats of an output row
};

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory"); }

__device__ __forceinline__ void CpAsync(void* dst, const void* src, int bytes) {
  const unsigned to = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(src), "r"(bytes) : "memory");
}

// Starts copying the block's window of every staged score operand at key j0 to `dst`; bytes past
// the keys (and rows past the queries) are zeros.
__device__ __forceinline__ void LoadOperandTiles(unsigned char* dst, const Args& a, const long long* base,
                                                 int m0, int j0) {
#pragma unroll
  for (int k = 0; k < kOperands; ++k) {
    if (!a.ops[k].staged) continue;
    const int es = OpBytes(k), chunks = kBlockN * es / 16;
    const unsigned char* src = static_cast<const unsigned char*>(a.ops[k].p);
    for (int idx = threadIdx.x; idx < kBlockM * chunks; idx += kWarps * 32) {
      const int r = idx / chunks, c = idx % chunks;
      const int i = m0 + r, j = j0 + c * (16 / es);
      int bytes = (a.skv - j) * es;
      bytes = i >= a.sq || bytes < 0 ? 0 : bytes > 16 ? 16 : bytes;
      CpAsync(dst + OpOffset(k) + r * OpRowBytes(k) + c * 16,
              bytes > 0 ? src + (base[k] + i * a.ops[k].stride[2] + j) * es : src, bytes);
    }
  }
}

// Starts copying rows [r0, r0 + kRows) of a head to dst[r * kLd + c], zeros past `rows` and `d`:
// 16-byte asynchronous copies (all in flight at once) when the rows allow, else plain loads.
template <int kRows, int kDPad>
__device__ __forceinline__ void LoadRows(elem_t* dst, const HeadView& v, long long head, int r0, int rows, int d) {
  constexpr int kLd = Row<kDPad>::kLd;
  const elem_t* src = v.p + head;
  if (v.vec) {
    constexpr int kVec = 16 / sizeof(elem_t);
    constexpr int kChunks = kDPad / kVec;
    for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kWarps * 32) {
      const int r = idx / kChunks, c = idx % kChunks * kVec;
      const bool valid = r0 + r < rows && c < d;
      CpAsync(dst + r * kLd + c, valid ? src + (r0 + r) * v.ss + c : src, valid ? 16 : 0);
    }
  } else {
    elem_t zero;
    FromFloat(0.f, &zero);
    for (int idx = threadIdx.x; idx < kRows * kDPad; idx += kWarps * 32) {
      const int r = idx / kDPad, c = idx % kDPad;
      dst[r * kLd + c] = r0 + r < rows && c < d ? src[(r0 + r) * v.ss + c * v.sd] : zero;
    }
  }
}

// The shared-memory layout both kernels use: Q, then `kStages` K and V tiles (the output rows take
// their place at the end), then `kExtra` bytes, then each key warp's row max and sum.
template <int kDPad, size_t kExtra>
struct Layout {
  static constexpr int kLd = Row<kDPad>::kLd;
  static constexpr size_t kQ = size_t(kBlockM) * kLd * sizeof(elem_t);
  static constexpr size_t kTile = size_t(kBlockN) * kLd;  // elements
  static constexpr size_t kO = size_t(kBlockM) * Row<kDPad>::kLdO * 4;
  static constexpr size_t kOpTile = OpOffset(kOperands);
  static constexpr size_t kFixed = kQ + kExtra + 2 * size_t(kWarpsN) * kBlockM * 4;
  static constexpr size_t kTwo = 4 * kTile * sizeof(elem_t) > kO ? 4 * kTile * sizeof(elem_t) : kO;
  // Two stages (the next tile streams in while this one is used) where two blocks still fit an SM.
  static constexpr int kStages = kFixed + kTwo + 2 * kOpTile <= 112 * 1024 ? 2 : 1;
  static constexpr size_t kKV = 2 * kStages * kTile * sizeof(elem_t);
  static constexpr size_t kRegion = kKV > kO ? kKV : kO;
  static constexpr size_t kOps = kStages * kOpTile;  // after the region
  static constexpr size_t kBytes = kFixed + kRegion + kOps;
};

// The block's finished rows from shared memory (floats, kLd per row) to the output.
template <int kLd>
__device__ __forceinline__ void WriteRows(const float* os, const Args& a, int b, int h, int m0) {
  const int rows = min(kBlockM, a.sq - m0);
  out_t* dst = a.out + b * a.out_sb + h * a.out_sh + m0 * a.out_ss;
  for (int idx = threadIdx.x; idx < rows * a.d; idx += kWarps * 32) {
    const int r = idx / a.d, c = idx - r * a.d;
    FromFloat(os[r * kLd + c]$OUT_SCALE, dst + r * a.out_ss + c);
  }
}

// The factor that turns a warp's partial row (its running max `m`) into its share of the final
// row, from every key warp's (max, sum) of that row in stat_m / stat_l.
__device__ __forceinline__ float MergeFactor(const float* stat_m, const float* stat_l, int r, float m) {
  float mall = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarpsN; ++w) mall = fmaxf(mall, stat_m[w * kBlockM + r]);
  if (mall == -INFINITY) return kZeroMaskedRows ? 0.f : NAN;  // every key masked
  float lall = 0.f;
#pragma unroll
  for (int w = 0; w < kWarpsN; ++w) lall += stat_l[w * kBlockM + r] * exp2f((stat_m[w * kBlockM + r] - mall) * kLog2e);
  return exp2f((m - mall) * kLog2e) / lall;
}
)";

// One lane owns rows rg + 4t of its warp's slab rows and keys cg + 8u of each 32-key step:
// scores by float4 FMA over shared Q and K, probabilities through a per-warp shared buffer.
constexpr const char* kFmaKernel = R"(
__device__ __forceinline__ float4 Load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 Load4(const __half* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}
__device__ __forceinline__ float4 Load4(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

constexpr int kStep = kWarpN < 32 ? kWarpN : 32;  // keys per online-softmax step
constexpr int kLdP = kStep + 1;                   // floats per probability row

template <int kDPad>
struct Smem : Layout<kDPad, size_t(kWarps) * 16 * kMs * kLdP * 4> {};

template <int kDPad>
__global__ void __launch_bounds__(kWarps * 32) AttentionKernel(const Args a) {
  typedef Smem<kDPad> L;
  constexpr int kLd = L::kLd, kLdO = Row<kDPad>::kLdO, kStages = L::kStages;
  constexpr int kRowsW = 16 * kMs;  // rows per warp
  constexpr int kTm = kRowsW / 4;   // rows per lane
  constexpr int kTn = kStep / 8;    // keys per lane per step
  constexpr int kTd = kDPad / 8;    // output columns per lane
  extern __shared__ __align__(16) unsigned char smem[];
  elem_t* qs = reinterpret_cast<elem_t*>(smem);
  elem_t* ks = reinterpret_cast<elem_t*>(smem + L::kQ);
  elem_t* vs = ks + kStages * L::kTile;
  float* os = reinterpret_cast<float*>(smem + L::kQ);
  unsigned char* opt = smem + L::kQ + L::kRegion;
  float* ps = reinterpret_cast<float*>(opt + L::kOps);
  float* stat_m = ps + kWarps * kRowsW * kLdP;
  float* stat_l = stat_m + kWarpsN * kBlockM;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % kWarpsM, wn = warp / kWarpsM;
  const int rg = lane / 8, cg = lane % 8;
  const int b = blockIdx.z, h = blockIdx.y, m0 = blockIdx.x * kBlockM;
  const int row0 = wm * kRowsW;
  float* pw = ps + warp * kRowsW * kLdP;
  long long base[kOperands > 0 ? kOperands : 1];
#pragma unroll
  for (int k = 0; k < kOperands; ++k) base[k] = b * a.ops[k].stride[0] + h * a.ops[k].stride[1];
  const long long kh = b * a.k.sb + h * a.k.sh, vh = b * a.v.sb + h * a.v.sh;

  LoadRows<kBlockM, kDPad>(qs, a.q, b * a.q.sb + h * a.q.sh, m0, a.sq, a.d);
  LoadRows<kBlockN, kDPad>(ks, a.k, kh, 0, a.skv, a.d);
  LoadRows<kBlockN, kDPad>(vs, a.v, vh, 0, a.skv, a.d);
  LoadOperandTiles(opt, a, base, m0, 0);
  CpAsyncCommit();
  float o[kTm][kTd], m[kTm], l[kTm];
#pragma unroll
  for (int t = 0; t < kTm; ++t) {
    m[t] = -INFINITY;
    l[t] = 0.f;
#pragma unroll
    for (int e = 0; e < kTd; ++e) o[t][e] = 0.f;
  }

  for (int j0 = 0, tile = 0; j0 < a.skv; j0 += kBlockN, ++tile) {
    const int stage = kStages == 2 ? tile & 1 : 0;
    const bool next = j0 + kBlockN < a.skv;
    if (kStages == 2 && next) {
      LoadRows<kBlockN, kDPad>(ks + (stage ^ 1) * L::kTile, a.k, kh, j0 + kBlockN, a.skv, a.d);
      LoadRows<kBlockN, kDPad>(vs + (stage ^ 1) * L::kTile, a.v, vh, j0 + kBlockN, a.skv, a.d);
      LoadOperandTiles(opt + (stage ^ 1) * L::kOpTile, a, base, m0, j0 + kBlockN);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const elem_t* kt = ks + stage * L::kTile;
    const elem_t* vt = vs + stage * L::kTile;
    const unsigned char* tile_ops = opt + stage * L::kOpTile;
    for (int c0 = wn * kWarpN; c0 < (wn + 1) * kWarpN && j0 + c0 < a.skv; c0 += kStep) {
      float s[kTm][kTn];
#pragma unroll
      for (int t = 0; t < kTm; ++t) {
#pragma unroll
        for (int u = 0; u < kTn; ++u) s[t][u] = 0.f;
      }
#pragma unroll 2
      for (int dd = 0; dd < kDPad; dd += 4) {
        float4 qv[kTm], kv[kTn];
#pragma unroll
        for (int t = 0; t < kTm; ++t) qv[t] = Load4(qs + (row0 + rg + 4 * t) * kLd + dd);
#pragma unroll
        for (int u = 0; u < kTn; ++u) kv[u] = Load4(kt + (c0 + cg + 8 * u) * kLd + dd);
#pragma unroll
        for (int t = 0; t < kTm; ++t) {
#pragma unroll
          for (int u = 0; u < kTn; ++u) {
            s[t][u] = fmaf(qv[t].x, kv[u].x, s[t][u]);
            s[t][u] = fmaf(qv[t].y, kv[u].y, s[t][u]);
            s[t][u] = fmaf(qv[t].z, kv[u].z, s[t][u]);
            s[t][u] = fmaf(qv[t].w, kv[u].w, s[t][u]);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < kTm; ++t) {
        const int i = m0 + row0 + rg + 4 * t;
        float mx = -INFINITY;
#pragma unroll
        for (int u = 0; u < kTn; ++u) {
          const int j = j0 + c0 + cg + 8 * u;
          float v = s[t][u];
          if (j >= a.skv) {
            v = -INFINITY;
          } else if (i < a.sq) {
            v = Score(v, a, base, tile_ops, i, j, row0 + rg + 4 * t, c0 + cg + 8 * u);
          }
          s[t][u] = v;
          mx = fmaxf(mx, v);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        const float mnew = fmaxf(m[t], mx);
        const float muse = mnew == -INFINITY ? 0.f : mnew;
        const float alpha = exp2f((m[t] - muse) * kLog2e);
        m[t] = mnew;
        l[t] *= alpha;
#pragma unroll
        for (int e = 0; e < kTd; ++e) o[t][e] *= alpha;
#pragma unroll
        for (int u = 0; u < kTn; ++u) {
          const float p = exp2f((s[t][u] - muse) * kLog2e);
          l[t] += p;
          pw[(rg + 4 * t) * kLdP + cg + 8 * u] = p;
        }
      }
      __syncwarp();
#pragma unroll 4
      for (int jj = 0; jj < kStep; ++jj) {
        float vv[kTd];
#pragma unroll
        for (int e = 0; e < kTd; ++e) vv[e] = ToFloat(vt[(c0 + jj) * kLd + cg + 8 * e]);
#pragma unroll
        for (int t = 0; t < kTm; ++t) {
          const float p = pw[(rg + 4 * t) * kLdP + jj];
#pragma unroll
          for (int e = 0; e < kTd; ++e) o[t][e] = fmaf(p, vv[e], o[t][e]);
        }
      }
      __syncwarp();
    }
    __syncthreads();  // the tile is consumed
    if (kStages == 1 && next) {
      LoadRows<kBlockN, kDPad>(ks, a.k, kh, j0 + kBlockN, a.skv, a.d);
      LoadRows<kBlockN, kDPad>(vs, a.v, vh, j0 + kBlockN, a.skv, a.d);
      LoadOperandTiles(opt, a, base, m0, j0 + kBlockN);
      CpAsyncCommit();
    }
  }

#pragma unroll
  for (int t = 0; t < kTm; ++t) {
    l[t] += __shfl_xor_sync(0xffffffffu, l[t], 1);
    l[t] += __shfl_xor_sync(0xffffffffu, l[t], 2);
    l[t] += __shfl_xor_sync(0xffffffffu, l[t], 4);
  }
  if (cg == 0) {
#pragma unroll
    for (int t = 0; t < kTm; ++t) {
      stat_m[wn * kBlockM + row0 + rg + 4 * t] = m[t];
      stat_l[wn * kBlockM + row0 + rg + 4 * t] = l[t];
    }
  }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < kTm; ++t) {
    const float f = MergeFactor(stat_m, stat_l, row0 + rg + 4 * t, m[t]);
#pragma unroll
    for (int e = 0; e < kTd; ++e) o[t][e] *= f;
  }
  for (int w = 0; w < kWarpsN; ++w) {  // key warps add their rows in a fixed order
    if (wn == w) {
#pragma unroll
      for (int t = 0; t < kTm; ++t) {
#pragma unroll
        for (int e = 0; e < kTd; ++e) {
          float* dst = os + (row0 + rg + 4 * t) * kLdO + cg + 8 * e;
          *dst = w == 0 ? o[t][e] : *dst + o[t][e];
        }
      }
    }
    __syncthreads();
  }
  WriteRows<kLdO>(os, a, b, h, m0);
}
)";

// Each warp owns 16-row slabs of queries: S = Q K^T and O += P V by mma.sync m16n8k16 with f32
// accumulators, P kept in registers (the accumulator layout of S is the A layout of P V), V
// through ldmatrix.trans.
constexpr const char* kMmaKernel = R"(
__device__ __forceinline__ void Mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.$MMA_TYPE.$MMA_TYPE.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t* r, const elem_t* p) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// Two probabilities as the 16-bit pair an A fragment holds (the lower k first).
__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
$PACK_BODY}

__device__ __forceinline__ void LdMatrixX4(uint32_t* r, const elem_t* p) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

constexpr int kStep = kWarpN < 64 ? kWarpN : 64;  // keys per online-softmax step

template <int kDPad>
struct Smem : Layout<kDPad, 0> {};

template <int kDPad>
__global__ void __launch_bounds__(kWarps * 32) AttentionKernel(const Args a) {
  typedef Smem<kDPad> L;
  constexpr int kLd = L::kLd, kLdO = Row<kDPad>::kLdO, kStages = L::kStages;
  constexpr int kNt = kStep / 8;   // 8-key tiles of S per step
  constexpr int kDt = kDPad / 8;   // 8-column tiles of O
  constexpr int kRowsW = 16 * kMs;
  constexpr bool kQRegs = kMs * kDPad <= 128;  // Q's A fragments stay in registers
  extern __shared__ __align__(16) unsigned char smem[];
  elem_t* qs = reinterpret_cast<elem_t*>(smem);
  elem_t* ks = reinterpret_cast<elem_t*>(smem + L::kQ);
  elem_t* vs = ks + kStages * L::kTile;
  float* os = reinterpret_cast<float*>(smem + L::kQ);
  unsigned char* opt = smem + L::kQ + L::kRegion;
  float* stat_m = reinterpret_cast<float*>(opt + L::kOps);
  float* stat_l = stat_m + kWarpsN * kBlockM;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % kWarpsM, wn = warp / kWarpsM;
  const int g = lane >> 2, tg = lane & 3;
  // The shared-memory rows each lane points ldmatrix at: A (Q) fragments and B (K) fragments.
  const int arow = (lane & 7) + ((lane >> 3) & 1) * 8, acol = (lane >> 4) * 8;
  const int brow = (lane & 7) + (lane >> 4) * 8, bcol = ((lane >> 3) & 1) * 8;
  const int b = blockIdx.z, h = blockIdx.y, m0 = blockIdx.x * kBlockM;
  const int row0 = wm * kRowsW;
  long long base[kOperands > 0 ? kOperands : 1];
#pragma unroll
  for (int k = 0; k < kOperands; ++k) base[k] = b * a.ops[k].stride[0] + h * a.ops[k].stride[1];
  const long long kh = b * a.k.sb + h * a.k.sh, vh = b * a.v.sb + h * a.v.sh;

  LoadRows<kBlockM, kDPad>(qs, a.q, b * a.q.sb + h * a.q.sh, m0, a.sq, a.d);
  LoadRows<kBlockN, kDPad>(ks, a.k, kh, 0, a.skv, a.d);
  LoadRows<kBlockN, kDPad>(vs, a.v, vh, 0, a.skv, a.d);
  LoadOperandTiles(opt, a, base, m0, 0);
  CpAsyncCommit();
  float o[kMs][kDt][4], m[kMs][2], l[kMs][2];
  uint32_t qf[kMs][kQRegs ? kDPad / 16 : 1][4];
#pragma unroll
  for (int ms = 0; ms < kMs; ++ms) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      m[ms][hf] = -INFINITY;
      l[ms][hf] = 0.f;
    }
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt) {
#pragma unroll
      for (int r = 0; r < 4; ++r) o[ms][dt][r] = 0.f;
    }
  }

  for (int j0 = 0, tile = 0; j0 < a.skv; j0 += kBlockN, ++tile) {
    const int stage = kStages == 2 ? tile & 1 : 0;
    const bool next = j0 + kBlockN < a.skv;
    if (kStages == 2 && next) {  // the next tile streams in while this one is used
      LoadRows<kBlockN, kDPad>(ks + (stage ^ 1) * L::kTile, a.k, kh, j0 + kBlockN, a.skv, a.d);
      LoadRows<kBlockN, kDPad>(vs + (stage ^ 1) * L::kTile, a.v, vh, j0 + kBlockN, a.skv, a.d);
      LoadOperandTiles(opt + (stage ^ 1) * L::kOpTile, a, base, m0, j0 + kBlockN);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const elem_t* kt = ks + stage * L::kTile;
    const elem_t* vt = vs + stage * L::kTile;
    const unsigned char* tile_ops = opt + stage * L::kOpTile;
    if (kQRegs && tile == 0) {  // Q arrived with the first tile
#pragma unroll
      for (int ms = 0; ms < kMs; ++ms) {
#pragma unroll
        for (int kk = 0; kk < kDPad / 16; ++kk) {
          LdMatrixX4(qf[ms][kk], qs + (row0 + ms * 16 + arow) * kLd + kk * 16 + acol);
        }
      }
    }
    for (int c0 = wn * kWarpN; c0 < (wn + 1) * kWarpN && j0 + c0 < a.skv; c0 += kStep) {
      float s[kMs][kNt][4];
#pragma unroll
      for (int ms = 0; ms < kMs; ++ms) {
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
          for (int r = 0; r < 4; ++r) s[ms][nt][r] = 0.f;
        }
      }
#pragma unroll
      for (int kk = 0; kk < kDPad / 16; ++kk) {
        uint32_t qa[kMs][4];
#pragma unroll
        for (int ms = 0; ms < kMs; ++ms) {
          if constexpr (kQRegs) {
#pragma unroll
            for (int r = 0; r < 4; ++r) qa[ms][r] = qf[ms][kk][r];
          } else {
            LdMatrixX4(qa[ms], qs + (row0 + ms * 16 + arow) * kLd + kk * 16 + acol);
          }
        }
#pragma unroll
        for (int np = 0; np < kNt / 2; ++np) {
          uint32_t kb[4];  // B fragments of key tiles 2 np and 2 np + 1
          LdMatrixX4(kb, kt + (c0 + np * 16 + brow) * kLd + kk * 16 + bcol);
#pragma unroll
          for (int ms = 0; ms < kMs; ++ms) {
            Mma(s[ms][2 * np], qa[ms], kb[0], kb[1]);
            Mma(s[ms][2 * np + 1], qa[ms], kb[2], kb[3]);
          }
        }
      }
#pragma unroll
      for (int ms = 0; ms < kMs; ++ms) {
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int i = m0 + row0 + ms * 16 + g + (r >> 1) * 8;
            const int j = j0 + c0 + nt * 8 + 2 * tg + (r & 1);
            float v = s[ms][nt][r];
            if (j >= a.skv) {
              v = -INFINITY;
            } else if (i < a.sq) {
              v = Score(v, a, base, tile_ops, i, j, i - m0, j - j0);
            }
            s[ms][nt][r] = v;
            mx[r >> 1] = fmaxf(mx[r >> 1], v);
          }
        }
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 1));
          mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 2));
          const float mnew = fmaxf(m[ms][hf], mx[hf]);
          const float muse = mnew == -INFINITY ? 0.f : mnew;
          const float alpha = exp2f((m[ms][hf] - muse) * kLog2e);
          m[ms][hf] = mnew;
          mx[hf] = muse;
          l[ms][hf] *= alpha;
#pragma unroll
          for (int dt = 0; dt < kDt; ++dt) {
            o[ms][dt][2 * hf] *= alpha;
            o[ms][dt][2 * hf + 1] *= alpha;
          }
        }
#pragma unroll
        for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const float p = exp2f((s[ms][nt][r] - mx[r >> 1]) * kLog2e);
            l[ms][r >> 1] += p;
            s[ms][nt][r] = p;
          }
        }
      }
#pragma unroll
      for (int kk = 0; kk < kStep / 16; ++kk) {
        uint32_t pa[kMs][4];
#pragma unroll
        for (int ms = 0; ms < kMs; ++ms) {
          pa[ms][0] = Pack(s[ms][2 * kk][0], s[ms][2 * kk][1]);
          pa[ms][1] = Pack(s[ms][2 * kk][2], s[ms][2 * kk][3]);
          pa[ms][2] = Pack(s[ms][2 * kk + 1][0], s[ms][2 * kk + 1][1]);
          pa[ms][3] = Pack(s[ms][2 * kk + 1][2], s[ms][2 * kk + 1][3]);
        }
        const elem_t* vrow = vt + (c0 + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd + (lane >> 4) * 8;
#pragma unroll
        for (int dp = 0; dp < kDPad / 16; ++dp) {
          uint32_t vb[4];
          LdMatrixX4Trans(vb, vrow + dp * 16);
#pragma unroll
          for (int ms = 0; ms < kMs; ++ms) {
            Mma(o[ms][2 * dp], pa[ms], vb[0], vb[1]);
            Mma(o[ms][2 * dp + 1], pa[ms], vb[2], vb[3]);
          }
        }
      }
    }
    __syncthreads();  // the tile is consumed
    if (kStages == 1 && next) {
      LoadRows<kBlockN, kDPad>(ks, a.k, kh, j0 + kBlockN, a.skv, a.d);
      LoadRows<kBlockN, kDPad>(vs, a.v, vh, j0 + kBlockN, a.skv, a.d);
      LoadOperandTiles(opt, a, base, m0, j0 + kBlockN);
      CpAsyncCommit();
    }
  }

#pragma unroll
  for (int ms = 0; ms < kMs; ++ms) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      l[ms][hf] += __shfl_xor_sync(0xffffffffu, l[ms][hf], 1);
      l[ms][hf] += __shfl_xor_sync(0xffffffffu, l[ms][hf], 2);
    }
  }
  if (tg == 0) {
#pragma unroll
    for (int ms = 0; ms < kMs; ++ms) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        stat_m[wn * kBlockM + row0 + ms * 16 + g + 8 * hf] = m[ms][hf];
        stat_l[wn * kBlockM + row0 + ms * 16 + g + 8 * hf] = l[ms][hf];
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int ms = 0; ms < kMs; ++ms) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float f = MergeFactor(stat_m, stat_l, row0 + ms * 16 + g + 8 * hf, m[ms][hf]);
#pragma unroll
      for (int dt = 0; dt < kDt; ++dt) {
        o[ms][dt][2 * hf] *= f;
        o[ms][dt][2 * hf + 1] *= f;
      }
    }
  }
  for (int w = 0; w < kWarpsN; ++w) {  // key warps add their rows in a fixed order
    if (wn == w) {
#pragma unroll
      for (int ms = 0; ms < kMs; ++ms) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
          for (int dt = 0; dt < kDt; ++dt) {
            float* dst = os + (row0 + ms * 16 + g + 8 * hf) * kLdO + dt * 8 + 2 * tg;
            dst[0] = w == 0 ? o[ms][dt][2 * hf] : dst[0] + o[ms][dt][2 * hf];
            dst[1] = w == 0 ? o[ms][dt][2 * hf + 1] : dst[1] + o[ms][dt][2 * hf + 1];
          }
        }
      }
    }
    __syncthreads();
  }
  WriteRows<kLdO>(os, a, b, h, m0);
}
)";

constexpr const char* kHost = R"(
long long StrideOf(const kf_tensor& t, int axis) {
  if (t.strides != nullptr) return t.strides[axis];
  long long s = 1;
  for (int a = t.ndim - 1; a > axis; --a) s *= t.shape[a];
  return s;
}

// [batch, seq, parts * heads * head_dim] (axis_b -1: [seq, ...] with batch 1), slice `part` of the
// last axis; heads or head_dim 0 is derived from the other.
int PackedHeads(const kf_tensor& t, int axis_b, int axis_s, int part, int parts, long long heads,
                long long head_dim, HeadView* v, long long* dims) {
  const int last = t.ndim - 1;
  const long long width = t.shape[last];
  if ((width > 1 && StrideOf(t, last) != 1) || width % parts != 0) return KF_ERR_UNSUPPORTED_SHAPE;
  const long long hidden = width / parts;
  if (heads == 0) {
    if (hidden % head_dim != 0) return KF_ERR_UNSUPPORTED_SHAPE;
    heads = hidden / head_dim;
  } else if (head_dim == 0) {
    if (hidden % heads != 0) return KF_ERR_UNSUPPORTED_SHAPE;
    head_dim = hidden / heads;
  } else if (heads * head_dim != hidden) {
    return KF_ERR_UNSUPPORTED_SHAPE;
  }
  dims[0] = axis_b >= 0 ? t.shape[axis_b] : 1;
  dims[1] = heads;
  dims[2] = t.shape[axis_s];
  dims[3] = head_dim;
  v->p = static_cast<const elem_t*>(t.data) + part * hidden;
  v->sb = axis_b >= 0 ? StrideOf(t, axis_b) : 0;
  v->sh = head_dim;
  v->ss = StrideOf(t, axis_s);
  v->sd = 1;
  return KF_OK;
}

// A rank-4 input whose axes hold batch, heads, seq and head_dim in some order.
int AxesHeads(const kf_tensor& t, int axis_b, int axis_h, int axis_s, int axis_d, HeadView* v,
              long long* dims) {
  const int axes[4] = {axis_b, axis_h, axis_s, axis_d};
  long long st[4];
  for (int r = 0; r < 4; ++r) {
    dims[r] = t.shape[axes[r]];
    st[r] = StrideOf(t, axes[r]);
  }
  v->p = static_cast<const elem_t*>(t.data);
  v->sb = st[0];
  v->sh = st[1];
  v->ss = st[2];
  v->sd = st[3];
  return KF_OK;
}

void SetVector(HeadView* v, const long long* dims) {
  constexpr long long kVec = 16 / sizeof(elem_t);
  v->vec = v->sd == 1 && dims[3] % kVec == 0 && (dims[2] <= 1 || v->ss % kVec == 0) &&
           (dims[1] <= 1 || v->sh % kVec == 0) && (dims[0] <= 1 || v->sb % kVec == 0) &&
           reinterpret_cast<uintptr_t>(v->p) % 16 == 0;
}

// A score operand of at most rank 4 broadcast to `dims` (numpy rules, aligned at the right).
int Broadcast(const kf_tensor& t, const long long* dims, int elem_bytes, OperandView* o) {
  if (t.ndim > 4) return KF_ERR_INVALID_ARGUMENT;
  o->p = t.data;
  for (int r = 0; r < 4; ++r) o->stride[r] = 0;
  for (int a = 0; a < t.ndim; ++a) {
    const int r = 4 - t.ndim + a;
    if (t.shape[a] == 1) continue;
    if (t.shape[a] != dims[r]) return KF_ERR_UNSUPPORTED_SHAPE;
    o->stride[r] = StrideOf(t, a);
  }
  o->staged = o->stride[3] == 1 && reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
  for (int r = 0; r < 3; ++r) o->staged = o->staged && o->stride[r] * elem_bytes % 16 == 0;
  return KF_OK;
}

int ReadArgs(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out, Args* a,
             long long* batch) {
  static const int kRanks[] = {$INPUT_RANKS};
  static const int kTypes[] = {$INPUT_TYPES};
  if (n_in != $N_IN || n_out != 1) return KF_ERR_INVALID_ARGUMENT;
  for (int k = 0; k < n_in; ++k) {
    if (in[k].ndim != kRanks[k] || in[k].dtype != kTypes[k]) return KF_ERR_INVALID_ARGUMENT;
  }
  if (out[0].ndim != $OUT_RANK || out[0].dtype != $OUT_TYPE) return KF_ERR_INVALID_ARGUMENT;
  long long q[4], k[4], v[4];
  int status;
  if ((status = $Q_VIEW) != KF_OK) return status;
  if ((status = $K_VIEW) != KF_OK) return status;
  if ((status = $V_VIEW) != KF_OK) return status;
  if (q[0] != k[0] || q[0] != v[0] || q[1] != k[1] || q[1] != v[1] || q[3] != k[3] ||
      q[3] != v[3] || k[2] != v[2]) {
    return KF_ERR_UNSUPPORTED_SHAPE;
  }
  if (q[3] > $MAX_HEAD_DIM || q[2] > INT_MAX || k[2] > INT_MAX || q[1] > 65535 || q[0] > 65535) {
    return KF_ERR_UNSUPPORTED_SHAPE;
  }
  SetVector(&a->q, q);
  SetVector(&a->k, k);
  SetVector(&a->v, v);
  const long long scores[4] = {q[0], q[1], q[2], k[2]};
  (void)scores;
$OPERAND_VIEWS
  long long numel = 1, dense = 1;
  for (int d = out[0].ndim - 1; d >= 0; --d) {
    if (out[0].strides != nullptr && out[0].shape[d] > 1 && out[0].strides[d] != dense) {
      return KF_ERR_UNSUPPORTED_SHAPE;
    }
    dense *= out[0].shape[d];
    numel *= out[0].shape[d];
  }
  if (numel != q[0] * q[1] * q[2] * q[3]) return KF_ERR_UNSUPPORTED_SHAPE;
  a->out = static_cast<out_t*>(out[0].data);
$OUT_STRIDES
  a->heads = static_cast<int>(q[1]);
  a->sq = static_cast<int>(q[2]);
  a->skv = static_cast<int>(k[2]);
  a->d = static_cast<int>(q[3]);
  *batch = q[0];
  return KF_OK;
}

template <int kDPad>
int Launch(const Args& a, long long batch, cudaStream_t stream) {
  const size_t smem = Smem<kDPad>::kBytes;
  if (smem > 48 * 1024) {
    int device = 0, limit = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
      return KF_ERR_DEVICE;
    }
    if (smem > static_cast<size_t>(limit)) return KF_ERR_UNSUPPORTED_SHAPE;
    if (cudaFuncSetAttribute(AttentionKernel<kDPad>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem)) != cudaSuccess) {
      return KF_ERR_DEVICE;
    }
  }
  const dim3 grid((a.sq + kBlockM - 1) / kBlockM, a.heads, static_cast<unsigned>(batch));
  AttentionKernel<kDPad><<<grid, kWarps * 32, smem, stream>>>(a);
  return cudaGetLastError() == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
}

}  // namespace

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void* stream) {
  Args a;
  long long batch = 0;
  const int status = ReadArgs(in, n_in, out, n_out, &a, &batch);
  if (status != KF_OK) return status;
  if (batch == 0 || a.heads == 0 || a.sq == 0 || a.d == 0) return KF_OK;  // nothing to write
  if (a.skv == 0) return KF_ERR_UNSUPPORTED_SHAPE;  // a softmax over no keys
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
$DISPATCH  return KF_ERR_UNSUPPORTED_SHAPE;
}
)";

std::string HeadViewCall(const HeadOperand& op, const char* dims, const char* view) {
  if (op.packed) {
    return fmt::format("PackedHeads(in[{}], {}, {}, {}, {}, {}, {}, &a->{}, {})", op.input,
                       op.axis[0], op.axis[2], op.part, op.parts, op.fixed_heads, op.fixed_head_dim,
                       view, dims);
  }
  return fmt::format("AxesHeads(in[{}], {}, {}, {}, {}, &a->{}, {})", op.input, op.axis[0],
                     op.axis[1], op.axis[2], op.axis[3], view, dims);
}

std::string RenderSource(const AttentionPlan& plan, const Config& c,
                         const std::string& explanation) {
  std::string score_body;
  std::string op_bytes;  // OpBytes(k) as a chain of conditionals
  for (size_t k = 0; k < plan.operands.size(); ++k) {
    const ScoreOperand& op = plan.operands[k];
    const std::string type = CudaType(op.dtype);
    op_bytes += fmt::format("k == {} ? {} : ", k, planner::DTypeBytes(op.dtype));
    const std::string staged = fmt::format(
        "reinterpret_cast<const {1}*>(tile + OpOffset({0}))[ti * (OpRowBytes({0}) / sizeof({1})) + "
        "tj]",
        k, type);
    const std::string global = fmt::format(
        "__ldg(static_cast<const {1}*>(a.ops[{0}].p) + base[{0}] + i * a.ops[{0}].stride[2] + j * "
        "a.ops[{0}].stride[3])",
        k, type);
    if (op.dtype == DType::kBool) {
      score_body += fmt::format("  const bool c{0} = (a.ops[{0}].staged ? {1} : {2}) != 0;\n", k,
                                staged, global);
    } else {
      score_body += fmt::format("  const float x{0} = ToFloat(a.ops[{0}].staged ? {1} : {2});\n", k,
                                staged, global);
    }
  }
  op_bytes += "0";
  for (const std::string& step : plan.score_steps) score_body += "  " + step + "\n";

  std::string operand_views;
  for (size_t k = 0; k < plan.operands.size(); ++k) {
    operand_views += fmt::format(
        "  if ((status = Broadcast(in[{}], scores, {}, &a->ops[{}])) != KF_OK) return status;\n",
        plan.operands[k].input, planner::DTypeBytes(plan.operands[k].dtype), k);
  }
  std::vector<std::string> ranks, types;
  for (size_t k = 0; k < plan.input_ranks.size(); ++k) {
    ranks.push_back(std::to_string(plan.input_ranks[k]));
    types.push_back(KfType(plan.input_dtypes[k]));
  }
  const std::string out_strides =
      plan.out_heads_major
          ? "  a->out_sb = q[1] * q[2] * q[3];\n  a->out_sh = q[2] * q[3];\n  a->out_ss = q[3];"
          : "  a->out_sb = q[2] * q[1] * q[3];\n  a->out_sh = q[3];\n  a->out_ss = q[1] * q[3];";
  std::string dispatch;
  for (int dpad : c.head_dims) {
    dispatch += fmt::format("  if (a.d <= {0}) return Launch<{0}>(a, batch, s);\n", dpad);
  }
  const std::string pack_body = plan.dtype == DType::kBF16
                                    ? "  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);\n"
                                      "  return *reinterpret_cast<const uint32_t*>(&v);\n"
                                    : "  const __half2 v = __floats2half2_rn(lo, hi);\n"
                                      "  return *reinterpret_cast<const uint32_t*>(&v);\n";
  std::string out_scale;
  if (plan.out_scale != 1.0) {
    out_scale = fmt::format(" * {:.9g}f", static_cast<float>(plan.out_scale));
  }

  std::string source = "// kfleet cuda_attention: " + explanation + "\n";
  source += kPrelude;
  source += c.mma ? kMmaKernel : kFmaKernel;
  source += kHost;
  return Subst(std::move(source), {{"$ELEM", CudaType(plan.dtype)},
                                   {"$OUT_SCALE", out_scale},
                                   {"$OUT_STRIDES", out_strides},
                                   {"$OUT_RANK", std::to_string(plan.output_rank)},
                                   {"$OUT_TYPE", KfType(plan.out_dtype)},
                                   {"$OUT", CudaType(plan.out_dtype)},
                                   {"$BLOCK_M", std::to_string(c.block_m)},
                                   {"$BLOCK_N", std::to_string(c.block_n)},
                                   {"$WARPS_M", std::to_string(c.warps_m)},
                                   {"$WARPS", std::to_string(c.warps)},
                                   {"$OPERANDS", std::to_string(plan.operands.size())},
                                   {"$OP_BYTES", op_bytes},
                                   {"$OPERAND_VIEWS", operand_views},
                                   {"$ZERO_ROWS", plan.zero_masked_rows ? "true" : "false"},
                                   {"$SCORE_BODY", score_body},
                                   {"$MMA_TYPE", plan.dtype == DType::kBF16 ? "bf16" : "f16"},
                                   {"$PACK_BODY", pack_body},
                                   {"$INPUT_RANKS", fmt::format("{}", fmt::join(ranks, ", "))},
                                   {"$INPUT_TYPES", fmt::format("{}", fmt::join(types, ", "))},
                                   {"$N_IN", std::to_string(plan.input_ranks.size())},
                                   {"$Q_VIEW", HeadViewCall(plan.q, "q", "q")},
                                   {"$K_VIEW", HeadViewCall(plan.k, "k", "k")},
                                   {"$V_VIEW", HeadViewCall(plan.v, "v", "v")},
                                   {"$MAX_HEAD_DIM", std::to_string(c.head_dims.back())},
                                   {"$DISPATCH", dispatch}});
}

class CudaAttentionTemplate final : public TemplateFamily {
 public:
  std::string_view name() const override { return "cuda_attention"; }

  Status Supports(const SpecView& spec) const override { return AnalyzeAttention(spec).status(); }

  std::vector<ParamSpace> Space(const SpecView& spec) const override {
    Result<AttentionPlan> plan = AnalyzeAttention(spec);
    // Few (batch, head) pairs and short sequences fill the GPU only with small row blocks.
    const bool many_rows =
        plan.ok() && plan->batch * plan->heads * ((plan->seq_q + 63) / 64) >= 264;
    std::vector<ParamSpace> space = {
        {"block_m", many_rows ? std::vector<std::string>{"64", "32", "16"}
                              : std::vector<std::string>{"16", "32", "64"}},
        // Long key tiles amortize the block's synchronization; large head dims need shorter ones.
        {"block_n", !plan.ok() || plan->head_dim <= 128
                        ? std::vector<std::string>{"128", "64", "32"}
                        : std::vector<std::string>{"64", "32", "128"}},
        {"warps", {"4", "2", "8"}}};
    if (!plan.ok() || plan->dtype != DType::kF32) space.push_back({"mma", {"on", "off"}});
    return space;
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_ASSIGN_OR_RETURN(AttentionPlan plan, AnalyzeAttention(spec));
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    KF_ASSIGN_OR_RETURN(Config c, MakeConfig(plan, params));
    RenderedKernel kernel;
    kernel.explanation = fmt::format(
        "{}: flash attention, blocks of {} query rows of one (batch, head) over key tiles of {} "
        "in shared memory; {} warps as {} (rows) x {} (keys), {} rows x {} keys each, online "
        "softmax in f32 merged in a fixed order; {}; head dim compiled as {}.",
        plan.description, c.block_m, c.block_n, c.warps, c.warps_m, c.warps_n, 16 * c.slabs,
        c.warp_n,
        c.mma ? fmt::format("mma.sync m16n8k16 {} with f32 accumulators",
                            planner::DTypeName(plan.dtype))
              : "f32 FMA",
        fmt::join(c.head_dims, " / "));
    kernel.source = RenderSource(plan, c, kernel.explanation);
    return kernel;
  }
};

}  // namespace

std::unique_ptr<TemplateFamily> MakeCudaAttentionTemplate() {
  return std::make_unique<CudaAttentionTemplate>();
}

}  // namespace kfleet::agents
