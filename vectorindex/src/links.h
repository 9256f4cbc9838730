// The level-0 adjacency lists of an HNSW graph, one fixed-size record per slot, in one of two
// layouts:
// - plain: a uint32 count, then `cap` uint32 ids (the file format; mappable as is);
// - packed: a count, then the ids sorted and Elias-Fano coded: the low `low_` bits of each id
//   in a bit array, the high bits as a unary bucket bitmap. With ids below 2^b and `cap` ids a
//   list takes cap * (b - log2(cap) + 2) bits instead of 32 * cap. The int8 index uses it: its
//   level-0 lists were as large as its codes, and a list is read whole per expansion anyway.
// A record is only ever written whole from a local buffer, so writers under different slot
// locks never touch each other's bytes; readers copy a record out before decoding it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "array.h"
#include "store.h"

namespace vi {

class Level0Links {
 public:
  static constexpr size_t kMaxCap = 512;

  Level0Links() = default;
  Level0Links(size_t cap, bool packed) : cap_(cap), packed_(packed) {
    if (cap > kMaxCap) throw std::invalid_argument("HNSW degree too large");
    lg_cap_ = 0;
    while ((size_t(1) << lg_cap_) < cap_) ++lg_cap_;
    layout(1);
  }

  size_t cap() const { return cap_; }
  bool packed() const { return packed_; }
  size_t slots() const { return slots_; }

  // Copies slot s's ids into out (room for cap()); returns their count.
  size_t get(uint32_t s, uint32_t* out) const {
    const uint8_t* r = record(s);
    if (!packed_) {
      uint32_t n;
      std::memcpy(&n, r, sizeof n);
      std::memcpy(out, r + sizeof(uint32_t), n * sizeof(uint32_t));
      return n;
    }
    // Decoding reads whole words: room for one past the record's end.
    uint8_t buf[kMaxRecord + 8];
    std::memcpy(buf, r, stride_);
    std::memset(buf + stride_, 0, 8);
    const size_t n = count_bytes_ == 1 ? buf[0] : size_t(buf[0]) | size_t(buf[1]) << 8;
    const uint8_t* low = buf + count_bytes_;
    const uint8_t* high = low + low_bytes_;
    const uint64_t mask = (uint64_t(1) << low_) - 1;
    size_t i = 0;
    for (size_t w = 0; i < n; ++w) {
      uint64_t word;
      std::memcpy(&word, high + 8 * w, sizeof word);
      while (word && i < n) {
        const size_t pos = 64 * w + size_t(__builtin_ctzll(word));
        word &= word - 1;
        uint64_t lo = 0;
        if (low_) {
          const size_t bit = i * low_;
          std::memcpy(&lo, low + bit / 8, sizeof lo);
          lo = (lo >> (bit % 8)) & mask;
        }
        out[i] = uint32_t(((pos - i) << low_) | lo);
        ++i;
      }
    }
    return n;
  }

  // Slot s's ids without a copy where the layout allows (plain), else decoded into buf; for
  // readers that no writer can race (searches under the index's shared lock).
  const uint32_t* view(uint32_t s, uint32_t* buf, size_t* n) const {
    if (packed_) {
      *n = get(s, buf);
      return buf;
    }
    const uint8_t* r = record(s);
    uint32_t c;
    std::memcpy(&c, r, sizeof c);
    *n = c;
    return reinterpret_cast<const uint32_t*>(r + sizeof(uint32_t));
  }

  // Replaces slot s's list (n <= cap(), ids < slots()).
  void set(uint32_t s, const uint32_t* ids, size_t n) {
    uint8_t* r = mut_record(s);
    if (!packed_) {
      const uint32_t c = uint32_t(n);
      std::memcpy(r, &c, sizeof c);
      std::memcpy(r + sizeof c, ids, n * sizeof(uint32_t));
      return;
    }
    uint32_t sorted[kMaxCap];
    std::copy(ids, ids + n, sorted);
    std::sort(sorted, sorted + n);
    uint8_t buf[kMaxRecord + 8] = {};
    encode(sorted, n, buf);
    std::memcpy(r, buf, stride_);
  }

  // Room for `slots` lists in all; new ones are empty. A packed layout whose ids no longer fit
  // its low bits is re-encoded (the caller holds every slot, as for any resize).
  void resize(size_t slots) {
    widen(slots, slots);
    bytes_.mut().resize(slots * stride_, 0);
    slots_ = slots;
  }
  // Widens the layout for ids below `slots` now, so that the room reserved is final.
  void reserve(size_t slots) {
    widen(slots, slots);
    reserve_room(bytes_.mut(), slots * stride_);
  }
  void clear() {
    bytes_ = Array<uint8_t>();
    slots_ = 0;
    layout(1);
  }

  void prefetch(uint32_t s) const {
    const char* p = reinterpret_cast<const char*>(record(s));
    for (size_t off = 0; off < stride_; off += 64) __builtin_prefetch(p + off);
  }

  size_t owned_bytes() const { return bytes_.owned_bytes(); }
  void own() { bytes_.mut(); }

  // The plain layout of n slots, for the file: a view when this is plain, else decoded.
  size_t plain_words() const { return cap_ + 1; }
  const uint8_t* plain_view() const { return packed_ ? nullptr : bytes_.data(); }
  // Takes n plain records (cap() + 1 words each) from a file: viewed when plain, encoded when
  // packed. Returns false if a count exceeds cap() (the caller checks the ids).
  bool load_plain(const uint32_t* p, size_t n) {
    if (!packed_) {
      bytes_.set_view(reinterpret_cast<const uint8_t*>(p), n * stride_);
      slots_ = n;
      for (size_t s = 0; s < n; ++s) {
        if (p[s * (cap_ + 1)] > cap_) return false;
      }
      return true;
    }
    bytes_ = Array<uint8_t>();
    slots_ = 0;
    layout(1);
    resize(n);
    for (size_t s = 0; s < n; ++s) {
      const uint32_t* rec = p + s * (cap_ + 1);
      if (rec[0] > cap_) return false;
      for (size_t i = 0; i < rec[0]; ++i) {
        if (rec[1 + i] >= n) return false;
      }
      set(uint32_t(s), rec + 1, rec[0]);
    }
    return true;
  }

 private:
  // Count, low bits and bucket bitmap of cap ids below 2^16 at cap 512, rounded up.
  static constexpr size_t kMaxRecord = 2 + (kMaxCap * 32 + 2 * kMaxCap) / 8 + 8;

  const uint8_t* record(uint32_t s) const { return bytes_.data() + size_t(s) * stride_; }
  uint8_t* mut_record(uint32_t s) { return bytes_.mut().data() + size_t(s) * stride_; }

  // Ids below 2^ubits: the high part of an id has ubits - low_ bits, so the bucket bitmap has
  // at most cap ones and 2^(ubits - low_) <= 2 * cap zeros worth of room.
  void layout(size_t ubits) {
    ubits_ = ubits;
    if (!packed_) {
      count_bytes_ = 4;
      stride_ = (cap_ + 1) * sizeof(uint32_t);
      return;
    }
    low_ = ubits > lg_cap_ ? ubits - lg_cap_ : 0;
    count_bytes_ = cap_ < 256 ? 1 : 2;
    low_bytes_ = (cap_ * low_ + 7) / 8;
    const size_t high_bits = cap_ + (size_t(1) << (ubits - low_));
    stride_ = count_bytes_ + low_bytes_ + (high_bits + 7) / 8;
  }

  void widen(size_t slots, size_t room) {
    if (!packed_ || slots <= (size_t(1) << ubits_)) return;
    size_t ubits = ubits_;
    while ((size_t(1) << ubits) < slots) ++ubits;
    Array<uint8_t> data;
    std::swap(data, bytes_);
    Level0Links old = *this;  // decodes with the old layout
    old.bytes_ = std::move(data);
    layout(ubits);
    bytes_.mut().reserve(room * stride_);
    bytes_.mut().assign(slots_ * stride_, 0);
    uint32_t ids[kMaxCap];
    for (size_t s = 0; s < slots_; ++s) {
      const size_t n = old.get(uint32_t(s), ids);
      set(uint32_t(s), ids, n);
    }
  }

  void encode(const uint32_t* sorted, size_t n, uint8_t* buf) const {
    buf[0] = uint8_t(n);
    if (count_bytes_ == 2) buf[1] = uint8_t(n >> 8);
    uint8_t* low = buf + count_bytes_;
    uint8_t* high = low + low_bytes_;
    for (size_t i = 0; i < n; ++i) {
      if (low_) {
        const size_t bit = i * low_;
        uint64_t word;
        std::memcpy(&word, low + bit / 8, sizeof word);
        word |= (uint64_t(sorted[i]) & ((uint64_t(1) << low_) - 1)) << (bit % 8);
        std::memcpy(low + bit / 8, &word, sizeof word);
      }
      const size_t pos = (size_t(sorted[i]) >> low_) + i;
      high[pos / 8] |= uint8_t(1u << (pos % 8));
    }
  }

  size_t cap_ = 0, lg_cap_ = 0;
  bool packed_ = false;
  size_t ubits_ = 1, low_ = 0, count_bytes_ = 4, low_bytes_ = 0, stride_ = 0, slots_ = 0;
  Array<uint8_t> bytes_;
};

}  // namespace vi
