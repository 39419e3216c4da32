#include "common/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "common/ids.h"

namespace kfleet {
namespace {

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  int get() const { return fd_; }
  // Closes now so the caller sees close's error (which can report a failed write-back).
  int Close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

Status FsyncDir(const std::filesystem::path& dir) {
  FdCloser fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open directory " + dir.string(), errno);
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync directory " + dir.string(), errno);
  return Status::Ok();
}

}  // namespace

Result<MappedFile> MappedFile::Open(const std::filesystem::path& path) {
  FdCloser fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + path.string(), errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path.string(), errno);
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path.string() + ": not a regular file");
  if (st.st_size == 0) return MappedFile(nullptr, 0);
  const size_t size = static_cast<size_t>(st.st_size);
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED) return ErrnoError("mmap " + path.string(), errno);
  // One front-to-back pass follows (parsing): let the kernel read ahead.
  (void)::madvise(addr, size, MADV_SEQUENTIAL);
  return MappedFile(addr, size);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (addr_ != nullptr) ::munmap(addr_, size_);
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
}

Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes) {
  FdCloser fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + path.string(), errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path.string(), errno);
  if (S_ISDIR(st.st_mode)) return InvalidArgument(path.string() + ": is a directory, not a file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return ResourceExhausted(path.string() + ": " + std::to_string(st.st_size) +
                             " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  // st_size is only a hint: files under /proc report 0 and still have contents.
  std::string out;
  // One byte past the size lets the read that returns EOF land without growing the buffer (a
  // 1.5 GiB model would otherwise double it), and past the limit tells "exactly max_bytes" from
  // "more".
  out.resize(std::min(std::max<size_t>(static_cast<size_t>(st.st_size) + 1, 4096), max_bytes + 1));
  size_t done = 0;
  while (true) {
    if (done == out.size()) {
      if (out.size() > max_bytes) {
        return ResourceExhausted(path.string() + ": more than the limit of " +
                                 std::to_string(max_bytes) + " bytes");
      }
      out.resize(std::min(out.size() * 2, max_bytes + 1));
    }
    ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError("read " + path.string(), errno);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

Status WriteFileAtomic(const std::filesystem::path& path, std::string_view bytes, int mode) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  std::filesystem::path tmp = path;
  tmp += "." + NewId("tmp");
  {
    FdCloser fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (fd.get() < 0) return ErrnoError("create " + tmp.string(), errno);
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Status err = ErrnoError("write " + tmp.string(), errno);
        ::unlink(tmp.c_str());
        return err;
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0 || fd.Close() != 0) {
      Status err = ErrnoError("sync " + tmp.string(), errno);
      ::unlink(tmp.c_str());
      return err;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status err = ErrnoError("rename " + tmp.string() + " to " + path.string(), errno);
    ::unlink(tmp.c_str());
    return err;
  }
  return FsyncDir(dir);
}

Status MakeDirs(const std::filesystem::path& path, bool private_dir) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return IoError("create directory " + path.string() + ": " + ec.message());
  if (private_dir && ::chmod(path.c_str(), 0700) != 0) {
    return ErrnoError("chmod 0700 " + path.string(), errno);
  }
  return Status::Ok();
}

}  // namespace kfleet
