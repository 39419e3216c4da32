// Time goes through Clock so tests can advance it by hand (leases, heartbeats, timeouts).
#pragma once

#include <atomic>
#include <cstdint>

namespace kfleet {

class Clock {
 public:
  virtual ~Clock() = default;
  // Microseconds since the Unix epoch: for timestamps that are stored or shown.
  virtual int64_t NowUs() const = 0;
  // Microseconds on a clock that never goes back: for deadlines and durations.
  virtual int64_t MonotonicUs() const = 0;
};

// The process-wide real clock.
Clock& SystemClock();

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 1'700'000'000'000'000) : now_us_(start_us) {}
  int64_t NowUs() const override { return now_us_.load(); }
  int64_t MonotonicUs() const override { return now_us_.load(); }
  void AdvanceUs(int64_t delta_us) { now_us_.fetch_add(delta_us); }
  void AdvanceMs(int64_t delta_ms) { AdvanceUs(delta_ms * 1000); }

 private:
  std::atomic<int64_t> now_us_;
};

}  // namespace kfleet
