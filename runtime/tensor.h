// Host tensors shared by the float64 reference, the baseline executor and the harness: dense,
// row-major, 64-byte aligned, any kernel-ABI dtype. f16 / bf16 elements are stored as uint16_t.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::runtime {

using planner::DType;
using planner::Shape;

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled.
  Tensor(DType dtype, Shape shape);

  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t elements() const { return elements_; }
  size_t bytes() const { return bytes_; }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  // Typed views; T's size must match the dtype's (uint16_t for f16 / bf16, uint8_t for bool).
  template <typename T>
  T* as() {
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data());
  }

  // Element i (row-major) read as a double / written from a double (rounded to the dtype,
  // saturated for integers, nonzero -> true for bool).
  double GetDouble(int64_t i) const;
  void SetDouble(int64_t i, double value);
  int64_t GetInt(int64_t i) const;  // integers and bool exactly; floats truncated

 private:
  struct FreeAligned {
    void operator()(std::byte* p) const;
  };
  DType dtype_ = DType::kF32;
  Shape shape_;
  int64_t elements_ = 0;
  size_t bytes_ = 0;
  std::unique_ptr<std::byte[], FreeAligned> data_;
};

// Row-major strides in elements.
Shape ContiguousStrides(const Shape& shape);

// IEEE half / bfloat16 conversions, round to nearest even; NaN stays NaN, overflow becomes Inf.
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);

// Every element converted to `dtype` (float -> float rounds; float -> int truncates).
Tensor ConvertTensor(const Tensor& tensor, DType dtype);

// The bytes of a weight or constant the graph carries (Value::constant, raw_data or external
// data, converted from Value::data_dtype to Value::dtype). NotFound when the value has none.
Result<Tensor> LoadValueTensor(const planner::Value& value);

// Tensors by value id: the feeds of a run (runtime inputs and weights) and its results.
using TensorMap = std::map<int, Tensor>;

// Same dtype, shape and bytes.
bool BitwiseEqual(const Tensor& a, const Tensor& b);
// "f32[1,128,768]".
std::string DescribeTensor(const Tensor& tensor);

}  // namespace kfleet::runtime
