/* kfleet kernel ABI, version 1.
 *
 * A candidate kernel is one source file that compiles to a shared library exporting
 * kf_kernel_run. The harness (and later the model runner) calls it with the spec's inputs in
 * order (in0, in1, ...) and its outputs (out0, ...), all dense row-major unless strides say
 * otherwise. Kernels read shapes at run time: they are tested on shapes other than the profiled
 * ones and must handle any valid size, including tails that are not powers of two.
 *
 * Rules the harness enforces: write every output element; never write an input; return the same
 * bits for the same inputs; keep no results across calls; no files, sockets or processes. */
#ifndef KFLEET_KERNEL_H_
#define KFLEET_KERNEL_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KF_ABI_VERSION 1

/* Element types; the same codes as kernel.capnp's DType. f16 and bf16 are stored as uint16_t. */
typedef enum {
  KF_F32 = 0,
  KF_F16 = 1,
  KF_BF16 = 2,
  KF_F64 = 3,
  KF_I64 = 4,
  KF_I32 = 5,
  KF_I16 = 6,
  KF_I8 = 7,
  KF_U8 = 8,
  KF_BOOL = 9
} kf_dtype;

/* What kf_kernel_run returns. Anything but KF_OK fails the evaluation with this reason. */
typedef enum {
  KF_OK = 0,
  KF_ERR_UNSUPPORTED_SHAPE = 1, /* the kernel cannot handle these shapes */
  KF_ERR_INVALID_ARGUMENT = 2,  /* wrong number of tensors, dtype or rank */
  KF_ERR_OUT_OF_MEMORY = 3,     /* a scratch allocation failed */
  KF_ERR_DEVICE = 4,            /* a CUDA / HIP call failed */
  KF_ERR_INTERNAL = 5
} kf_status;

/* A tensor view. Pointers are device pointers on CUDA / HIP. Strides count elements, not bytes;
 * shape and strides have ndim entries (none for a scalar). */
typedef struct {
  void* data;
  int32_t dtype;
  int32_t ndim;
  const int64_t* shape;
  const int64_t* strides;
} kf_tensor;

/* Runs the kernel once. `stream` is the backend's stream (cudaStream_t, hipStream_t) or null on
 * CPU. Returns a kf_status. */
__attribute__((visibility("default"))) int kf_kernel_run(const kf_tensor* in, int32_t n_in,
                                                         kf_tensor* out, int32_t n_out,
                                                         void* stream);

#ifdef __cplusplus
}
#endif

#endif /* KFLEET_KERNEL_H_ */
