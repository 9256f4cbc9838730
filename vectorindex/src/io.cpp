#include "io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace vi {
namespace {

constexpr uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL,
                   P3 = 0x165667B19E3779F9ULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t round_(uint64_t acc, uint64_t v) { return rotl(acc + v * P2, 31) * P1; }

[[noreturn]] void os_error(const std::string& what, const std::string& path) {
  throw std::system_error(errno, std::generic_category(), what + " " + path);
}

}  // namespace

Checksum::Checksum() : lane_{P1 + P2, P2, 0, 0 - P1} {}

void Checksum::update(const uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t v;
      std::memcpy(&v, p + i + 8 * l, 8);
      lane_[l] = round_(lane_[l], v);
    }
  }
  uint8_t tail[32] = {};
  if (i < n) {
    std::memcpy(tail, p + i, n - i);
    for (int l = 0; l < 4; ++l) {
      uint64_t v;
      std::memcpy(&v, tail + 8 * l, 8);
      lane_[l] = round_(lane_[l], v);
    }
  }
  total_ += n;
}

uint64_t Checksum::digest() const {
  uint64_t h = rotl(lane_[0], 1) + rotl(lane_[1], 7) + rotl(lane_[2], 12) + rotl(lane_[3], 18);
  h ^= total_ * P3;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  return h;
}

FileWriter::FileWriter(const std::string& path)
    : path_(path), tmp_(path + ".tmp-" + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) os_error("cannot create", tmp_);
  const Header blank{};
  raw(&blank, sizeof blank);
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void FileWriter::raw(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t w = ::write(fd_, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      os_error("cannot write", tmp_);
    }
    c += w;
    n -= size_t(w);
  }
}

void FileWriter::section(const void* p, size_t bytes) {
  const size_t whole = bytes / kAlign * kAlign;
  if (whole) {
    sum_.update(static_cast<const uint8_t*>(p), whole);
    raw(p, whole);
  }
  if (whole < bytes) {
    uint8_t last[kAlign] = {};
    std::memcpy(last, static_cast<const uint8_t*>(p) + whole, bytes - whole);
    sum_.update(last, kAlign);
    raw(last, kAlign);
  }
  payload_ += aligned(bytes);
}

void FileWriter::commit(Header h) {
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kFormatVersion;
  h.payload_bytes = payload_;
  h.checksum = sum_.digest();
  if (::pwrite(fd_, &h, sizeof h, 0) != ssize_t(sizeof h)) os_error("cannot write", tmp_);
  if (::fsync(fd_) != 0) os_error("cannot fsync", tmp_);
  if (::close(fd_) != 0) {
    fd_ = -1;
    os_error("cannot close", tmp_);
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    ::unlink(tmp_.c_str());
    os_error("cannot rename onto", path_);
  }
  // The rename is durable only once the directory entry is.
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

Mapping::Mapping(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) os_error("cannot open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    os_error("cannot stat", path);
  }
  size_ = size_t(st.st_size);
  if (size_) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      os_error("cannot map", path);
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

Mapping::~Mapping() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

FileReader::FileReader(std::shared_ptr<Mapping> map, const std::string& path)
    : map_(std::move(map)), path_(path) {
  if (map_->size() < sizeof(Header)) {
    fail("truncated: " + std::to_string(map_->size()) + " bytes, shorter than the header");
  }
  std::memcpy(&h_, map_->data(), sizeof h_);
  if (std::memcmp(h_.magic, kMagic, sizeof kMagic) != 0) fail("not a vectorindex file");
  if (h_.version != kFormatVersion) {
    fail("format version " + std::to_string(h_.version) + ", this build reads " +
         std::to_string(kFormatVersion));
  }
  const size_t have = map_->size() - sizeof(Header);
  if (h_.payload_bytes != have) {
    fail("truncated or padded: header says " + std::to_string(h_.payload_bytes) +
         " payload bytes, file has " + std::to_string(have));
  }
  Checksum sum;
  sum.update(map_->data() + sizeof(Header), have);
  if (sum.digest() != h_.checksum) fail("checksum mismatch");
}

void FileReader::fail(const std::string& why) const {
  throw std::invalid_argument("corrupt index file " + path_ + ": " + why);
}

const void* FileReader::section(size_t bytes) {
  if (bytes > map_->size() || aligned(bytes) > map_->size() - pos_) {
    fail("a section runs past the end of the file");
  }
  const void* p = map_->data() + pos_;
  pos_ += aligned(bytes);
  return p;
}

void FileReader::expect_end() const {
  if (pos_ != map_->size()) fail("unexpected bytes after the last section");
}

}  // namespace vi
