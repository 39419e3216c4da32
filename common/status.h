// Errors as values: Status for operations without a value, Result<T> for those with one.
// Messages are written for a person to act on; callers add context as errors travel up.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kfleet {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,    // the caller's input is wrong (bad config value, malformed frame)
  kNotFound,           // a named thing does not exist
  kAlreadyExists,      // a unique thing exists already
  kFailedPrecondition, // the system is not in a state that allows this
  kPermissionDenied,   // an identity or key is not allowed
  kResourceExhausted,  // a size or count cap was hit
  kDeadlineExceeded,   // a timeout fired
  kUnavailable,        // a peer or resource is temporarily unreachable; retrying may help
  kCancelled,          // the work was cancelled by request
  kCorruption,         // stored or received data is damaged
  kIoError,            // the operating system refused a file or socket operation
  kInternal,           // a bug in kfleet
};

std::string_view ErrorCodeName(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "not found: jobs: no job 12".
  std::string ToString() const;
  // Prefixes the message ("loading config.yaml: " + message); an ok status stays ok.
  Status WithContext(std::string_view context) const;

  // Marks a status as deliberately not inspected.
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {ErrorCode::kAlreadyExists, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {ErrorCode::kFailedPrecondition, std::move(m)};
}
inline Status PermissionDenied(std::string m) {
  return {ErrorCode::kPermissionDenied, std::move(m)};
}
inline Status ResourceExhausted(std::string m) {
  return {ErrorCode::kResourceExhausted, std::move(m)};
}
inline Status DeadlineExceeded(std::string m) {
  return {ErrorCode::kDeadlineExceeded, std::move(m)};
}
inline Status Unavailable(std::string m) { return {ErrorCode::kUnavailable, std::move(m)}; }
inline Status Cancelled(std::string m) { return {ErrorCode::kCancelled, std::move(m)}; }
inline Status Corruption(std::string m) { return {ErrorCode::kCorruption, std::move(m)}; }
inline Status IoError(std::string m) { return {ErrorCode::kIoError, std::move(m)}; }
inline Status Internal(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }

// IoError carrying strerror(errno_value): "open /x/y: No such file or directory".
Status ErrnoError(std::string_view what, int errno_value);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T val) : state_(std::move(val)) {}  // NOLINT: implicit by design
  Result(Status error) : state_(std::move(error)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(state_).ok() && "Result built from an ok Status carries no value");
  }

  bool ok() const { return std::holds_alternative<T>(state_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T value_or(T fallback) const& { return ok() ? std::get<T>(state_) : std::move(fallback); }

  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace kfleet

#define KF_CONCAT_INNER_(a, b) a##b
#define KF_CONCAT_(a, b) KF_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function when `expr` is not ok.
#define KF_RETURN_IF_ERROR(expr)                   \
  do {                                             \
    ::kfleet::Status kf_status_ = (expr);          \
    if (!kf_status_.ok()) return kf_status_;       \
  } while (false)

// `KF_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define KF_ASSIGN_OR_RETURN(lhs, expr) \
  KF_ASSIGN_OR_RETURN_IMPL_(KF_CONCAT_(kf_result_, __LINE__), lhs, expr)
#define KF_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
