// The on-disk format: a 128-byte header, then sections, each padded to 64 bytes so a mapped
// file gives aligned arrays. A checksum of everything after the header guards the payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace vi {

constexpr char kMagic[8] = {'V', 'E', 'C', 'I', 'N', 'D', 'E', 'X'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kAlign = 64;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t kind;  // 0 flat, 1 HNSW
  uint32_t metric;
  uint32_t quant;
  uint32_t keep_float;
  uint32_t reserved;
  uint64_t d;
  uint64_t n;  // slots, deleted ones included
  int64_t next_id;
  uint64_t aux[5];  // kind-specific parameters
  uint64_t payload_bytes;
  uint64_t checksum;
  uint8_t pad[128 - 8 - 24 - 24 - 40 - 16];
};
static_assert(sizeof(Header) == 128, "header is 128 bytes");

inline size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

class Checksum {
 public:
  Checksum();
  // n must be a multiple of 32 except on the last call.
  void update(const uint8_t* p, size_t n);
  uint64_t digest() const;

 private:
  uint64_t lane_[4];
  uint64_t total_ = 0;
};

// Writes PATH.tmp-PID, then fsyncs and renames it over PATH: readers see the old file or the
// new one, never a torn one.
class FileWriter {
 public:
  explicit FileWriter(const std::string& path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  void section(const void* p, size_t bytes);
  void commit(Header h);

 private:
  void raw(const void* p, size_t n);
  std::string path_, tmp_;
  int fd_ = -1;
  Checksum sum_;
  uint64_t payload_ = 0;
};

// A read-only mapping of a whole file.
class Mapping {
 public:
  explicit Mapping(const std::string& path);
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Checks a mapped file's header, size and checksum and hands out its sections in order.
class FileReader {
 public:
  FileReader(std::shared_ptr<Mapping> map, const std::string& path);
  const Header& header() const { return h_; }
  // Next section of `bytes`; throws if the file has no such section.
  const void* section(size_t bytes);
  // Raises the "corrupt index file" error.
  [[noreturn]] void fail(const std::string& why) const;
  void expect_end() const;

 private:
  std::shared_ptr<Mapping> map_;
  std::string path_;
  Header h_;
  size_t pos_ = sizeof(Header);
};

}  // namespace vi
