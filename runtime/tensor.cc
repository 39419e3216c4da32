#include "runtime/tensor.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "common/files.h"

namespace kfleet::runtime {
namespace {

constexpr size_t kAlignment = 64;

}  // namespace

void Tensor::FreeAligned::operator()(std::byte* p) const { std::free(p); }

Tensor::Tensor(DType dtype, Shape shape)
    : dtype_(dtype), shape_(std::move(shape)), elements_(planner::NumElements(shape_)) {
  bytes_ = static_cast<size_t>(elements_) * static_cast<size_t>(planner::DTypeBytes(dtype_));
  // Never zero bytes, so data() is a valid pointer even for an empty tensor.
  size_t alloc = (std::max<size_t>(bytes_, 1) + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, alloc);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, alloc);
  data_.reset(static_cast<std::byte*>(p));
}

Tensor::Tensor(const Tensor& other) : Tensor(other.dtype_, other.shape_) {
  if (bytes_ > 0) std::memcpy(data(), other.data(), bytes_);
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) *this = Tensor(other);
  return *this;
}

double Tensor::GetDouble(int64_t i) const {
  switch (dtype_) {
    case DType::kF32:
      return as<float>()[i];
    case DType::kF16:
      return HalfToFloat(as<uint16_t>()[i]);
    case DType::kBF16:
      return BFloat16ToFloat(as<uint16_t>()[i]);
    case DType::kF64:
      return as<double>()[i];
    case DType::kI64:
      return static_cast<double>(as<int64_t>()[i]);
    case DType::kI32:
      return as<int32_t>()[i];
    case DType::kI16:
      return as<int16_t>()[i];
    case DType::kI8:
      return as<int8_t>()[i];
    case DType::kU8:
      return as<uint8_t>()[i];
    case DType::kBool:
      return as<uint8_t>()[i] != 0 ? 1.0 : 0.0;
  }
  return 0;
}

namespace {

template <typename T>
T SaturateTo(double value) {
  if (std::isnan(value)) return 0;
  if (value <= static_cast<double>(std::numeric_limits<T>::min())) {
    return std::numeric_limits<T>::min();
  }
  if (value >= static_cast<double>(std::numeric_limits<T>::max())) {
    return std::numeric_limits<T>::max();
  }
  return static_cast<T>(value);
}

}  // namespace

void Tensor::SetDouble(int64_t i, double value) {
  switch (dtype_) {
    case DType::kF32:
      as<float>()[i] = static_cast<float>(value);
      return;
    case DType::kF16:
      as<uint16_t>()[i] = FloatToHalf(static_cast<float>(value));
      return;
    case DType::kBF16:
      as<uint16_t>()[i] = FloatToBFloat16(static_cast<float>(value));
      return;
    case DType::kF64:
      as<double>()[i] = value;
      return;
    case DType::kI64:
      as<int64_t>()[i] = SaturateTo<int64_t>(value);
      return;
    case DType::kI32:
      as<int32_t>()[i] = SaturateTo<int32_t>(value);
      return;
    case DType::kI16:
      as<int16_t>()[i] = SaturateTo<int16_t>(value);
      return;
    case DType::kI8:
      as<int8_t>()[i] = SaturateTo<int8_t>(value);
      return;
    case DType::kU8:
      as<uint8_t>()[i] = SaturateTo<uint8_t>(value);
      return;
    case DType::kBool:
      as<uint8_t>()[i] = value != 0 ? 1 : 0;
      return;
  }
}

int64_t Tensor::GetInt(int64_t i) const {
  switch (dtype_) {
    case DType::kI64:
      return as<int64_t>()[i];
    case DType::kI32:
      return as<int32_t>()[i];
    case DType::kI16:
      return as<int16_t>()[i];
    case DType::kI8:
      return as<int8_t>()[i];
    case DType::kU8:
    case DType::kBool:
      return as<uint8_t>()[i];
    default:
      return SaturateTo<int64_t>(GetDouble(i));
  }
}

Shape ContiguousStrides(const Shape& shape) {
  Shape strides(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

float HalfToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    out = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;
  } else {
    // Subnormal half: normalize into a float.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    out = sign | (static_cast<uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(out);
}

uint16_t FloatToHalf(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to Inf
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: scale into half's subnormal grid with round to nearest even.
    float magnitude = std::bit_cast<float>(abs);
    float scaled = magnitude * 16777216.0f;  // 2^24: one half subnormal ulp becomes 1.0
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even.
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

float BFloat16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t FloatToBFloat16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

Tensor ConvertTensor(const Tensor& tensor, DType dtype) {
  if (tensor.dtype() == dtype) return tensor;
  Tensor out(dtype, tensor.shape());
  const bool int_exact = !planner::IsFloat(tensor.dtype()) && !planner::IsFloat(dtype);
  for (int64_t i = 0; i < tensor.elements(); ++i) {
    if (int_exact && dtype == DType::kI64) {
      out.as<int64_t>()[i] = tensor.GetInt(i);
    } else {
      out.SetDouble(i, tensor.GetDouble(i));
    }
  }
  return out;
}

Result<Tensor> LoadValueTensor(const planner::Value& value) {
  if (!value.has_shape) {
    return FailedPrecondition(fmt::format("value '{}' has no known shape", value.name));
  }
  if (value.constant) {
    Tensor out(value.dtype, value.shape);
    const planner::ConstantData& c = *value.constant;
    const bool ints = !c.ints.empty() || c.floats.empty();
    const size_t n = ints ? c.ints.size() : c.floats.size();
    if (static_cast<int64_t>(n) != out.elements()) {
      return Internal(fmt::format("constant '{}' holds {} values for shape {}", value.name, n,
                                  planner::ShapeToString(value.shape)));
    }
    for (int64_t i = 0; i < out.elements(); ++i) {
      if (ints && value.dtype == DType::kI64) {
        out.as<int64_t>()[i] = c.ints[static_cast<size_t>(i)];
      } else if (ints) {
        out.SetDouble(i, static_cast<double>(c.ints[static_cast<size_t>(i)]));
      } else {
        out.SetDouble(i, c.floats[static_cast<size_t>(i)]);
      }
    }
    return out;
  }
  std::string external_bytes;
  std::string_view bytes;
  if (value.raw_data) {
    bytes = *value.raw_data;
  } else if (value.external) {
    KF_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(value.external->path));
    std::string_view all = file.data();
    const auto offset = static_cast<size_t>(value.external->offset);
    const auto length = static_cast<size_t>(value.external->length);
    if (offset > all.size() || length > all.size() - offset) {
      return Corruption(fmt::format("'{}': external data {} is shorter than offset {} + length {}",
                                    value.name, value.external->path, offset, length));
    }
    external_bytes.assign(all.substr(offset, length));
    bytes = external_bytes;
  } else {
    return NotFound(fmt::format("value '{}' carries no data", value.name));
  }
  Tensor stored(value.data_dtype, value.shape);
  if (bytes.size() != stored.bytes()) {
    return Corruption(fmt::format("'{}': {} bytes of data for {}[{}] ({} bytes)", value.name,
                                  bytes.size(), planner::DTypeName(value.data_dtype),
                                  planner::ShapeToString(value.shape), stored.bytes()));
  }
  if (!bytes.empty()) std::memcpy(stored.data(), bytes.data(), bytes.size());
  return ConvertTensor(stored, value.dtype);
}

bool BitwiseEqual(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.bytes() == 0 || std::memcmp(a.data(), b.data(), a.bytes()) == 0);
}

std::string DescribeTensor(const Tensor& tensor) {
  return fmt::format("{}{}", planner::DTypeName(tensor.dtype()),
                     planner::ShapeToString(tensor.shape()));
}

}  // namespace kfleet::runtime
