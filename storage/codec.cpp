#include "storage/codec.h"

#include <array>
#include <cstdint>
#include <cstring>

namespace facevec::storage::internal {
namespace {

constexpr unsigned kBitsPerByte = 8;
constexpr unsigned kLowByteMask = 0xff;
constexpr uint8_t kVarintPayloadMask = 0x7f;
constexpr uint8_t kVarintMoreBit = 0x80;
constexpr unsigned kVarintPayloadBits = 7;
constexpr unsigned kMaxVarintShift = 63;

template <typename T>
std::string encode_big_endian(T v) {
    std::string out(sizeof(T), '\0');
    for (size_t i = 0; i < sizeof(T); ++i) {
        out[sizeof(T) - 1 - i] = static_cast<char>(v & kLowByteMask);
        v >>= kBitsPerByte;
    }
    return out;
}

template <typename T>
std::optional<T> decode_big_endian(std::string_view bytes) {
    if (bytes.size() != sizeof(T))
        return std::nullopt;
    T v = 0;
    for (char c : bytes) {
        v = static_cast<T>((v << kBitsPerByte) | static_cast<uint8_t>(c));
    }
    return v;
}

void put_varint(std::string &out, uint64_t v) {
    while (v >= kVarintMoreBit) {
        out.push_back(
            static_cast<char>((v & kVarintPayloadMask) | kVarintMoreBit));
        v >>= kVarintPayloadBits;
    }
    out.push_back(static_cast<char>(v));
}

void put_bytes(std::string &out, const std::string &s) {
    put_varint(out, s.size());
    out.append(s);
}

// Reads from the front of `in`, advancing it; false when truncated.
bool get_varint(std::string_view &in, uint64_t &v) {
    v = 0;
    for (unsigned shift = 0; shift <= kMaxVarintShift;
         shift += kVarintPayloadBits) {
        if (in.empty())
            return false;
        auto byte = static_cast<uint8_t>(in.front());
        in.remove_prefix(1);
        v |= static_cast<uint64_t>(byte & kVarintPayloadMask) << shift;
        if ((byte & kVarintMoreBit) == 0)
            return true;
    }
    return false;
}

bool get_bytes(std::string_view &in, std::string &s) {
    uint64_t n = 0;
    if (!get_varint(in, n) || n > in.size())
        return false;
    s.assign(in.data(), n);
    in.remove_prefix(n);
    return true;
}

// kHexValue[c] is the value of c as a lowercase hex digit, or kNotHex
// (high bit set); a table, as hashes are random digits that defeat a
// branch predictor.
constexpr uint8_t kNotHex = 0xff;
constexpr uint8_t kNotHexBit = 0x80;
constexpr unsigned kNibbleBits = 4;
constexpr size_t kByteValues = 256;
constexpr std::array<uint8_t, kByteValues> make_hex_values() {
    constexpr uint8_t kDecimalDigits = 10;
    constexpr uint8_t kHexLetters = 6;
    std::array<uint8_t, kByteValues> t{};
    t.fill(kNotHex);
    for (uint8_t d = 0; d < kDecimalDigits; ++d)
        t['0' + d] = d;
    for (uint8_t d = 0; d < kHexLetters; ++d)
        t['a' + d] = kDecimalDigits + d;
    return t;
}
constexpr std::array<uint8_t, kByteValues> kHexValue = make_hex_values();

uint8_t hex_value(char c) {
    return kHexValue[static_cast<uint8_t>(c)];
}

// A content hash is varint(size * 2 + packed) and then its bytes; a hash
// of an even number of lowercase hex digits (SHA-256 and the like) is
// packed into the bytes the digits spell, half the size.
void put_hash(std::string &out, const std::string &hash) {
    uint8_t seen = 0;
    for (char c : hash)
        seen |= hex_value(c);
    bool packed =
        !hash.empty() && hash.size() % 2 == 0 && (seen & kNotHexBit) == 0;
    if (!packed) {
        put_varint(out, uint64_t{hash.size()} << 1);
        out.append(hash);
        return;
    }
    size_t n = hash.size() / 2;
    put_varint(out, uint64_t{n} << 1 | 1);
    size_t at = out.size();
    out.resize(at + n);
    for (size_t i = 0; i < n; ++i) {
        out[at + i] = static_cast<char>(hex_value(hash[2 * i]) << kNibbleBits |
                                        hex_value(hash[2 * i + 1]));
    }
}

bool get_hash(std::string_view &in, std::string &hash) {
    constexpr char kHexDigits[] = "0123456789abcdef";
    constexpr unsigned kNibbleMask = 0xf;
    uint64_t word = 0;
    if (!get_varint(in, word) || (word >> 1) > in.size())
        return false;
    size_t n = word >> 1;
    if ((word & 1) == 0) {
        hash.assign(in.data(), n);
    } else {
        hash.resize(2 * n);
        for (size_t i = 0; i < n; ++i) {
            auto byte = static_cast<uint8_t>(in[i]);
            hash[2 * i] = kHexDigits[byte >> kNibbleBits];
            hash[2 * i + 1] = kHexDigits[byte & kNibbleMask];
        }
    }
    in.remove_prefix(n);
    return true;
}

void append_face_meta(std::string &out, const face_record &face,
                      std::string_view db_fingerprint) {
    put_bytes(out, face.person);
    put_bytes(out, face.source);
    if (face.model_fingerprint == db_fingerprint) {
        put_varint(out, 0);
    } else {
        put_varint(out, face.model_fingerprint.size() + 1);
        out.append(face.model_fingerprint);
    }
    char when[sizeof(int64_t)];
    std::memcpy(when, &face.enrolled_at_us, sizeof when);
    out.append(when, sizeof when);
    put_hash(out, face.content_hash);
}

}  // namespace

std::string encode_u32(uint32_t v) {
    return encode_big_endian(v);
}
std::string encode_u64(uint64_t v) {
    return encode_big_endian(v);
}

std::optional<uint32_t> decode_u32(std::string_view bytes) {
    return decode_big_endian<uint32_t>(bytes);
}

std::optional<uint64_t> decode_u64(std::string_view bytes) {
    return decode_big_endian<uint64_t>(bytes);
}

std::string id_key(uint64_t id) {
    return encode_u64(id);
}

std::string person_prefix(std::string_view person) {
    std::string key(person);
    key.push_back(kLabelSeparator);
    return key;
}

std::string person_key(std::string_view person, uint64_t last_id) {
    std::string key = person_prefix(person);
    key.append(id_key(last_id));
    return key;
}

std::optional<uint64_t> id_of_person_key(std::string_view key,
                                         size_t prefix_size) {
    if (key.size() != prefix_size + kIdBytes)
        return std::nullopt;
    return decode_u64(key.substr(prefix_size));
}

uint64_t content_digest(std::string_view hash) {
    constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
    constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
    uint64_t h = kFnvOffset;
    for (char c : hash)
        h = (h ^ static_cast<uint8_t>(c)) * kFnvPrime;
    return h;
}

void append_person_entry(std::string &value, uint64_t previous,
                         const person_entry &entry) {
    put_varint(value, (entry.id - previous) << 1 | (entry.hashed ? 1 : 0));
    if (entry.hashed) {
        char digest[sizeof(uint64_t)];
        std::memcpy(digest, &entry.digest, sizeof digest);
        value.append(digest, sizeof digest);
    }
}

void append_person_entry(std::string &value, uint64_t previous, uint64_t id,
                         std::string_view hash) {
    person_entry e;
    e.id = id;
    e.hashed = !hash.empty();
    e.digest = e.hashed ? content_digest(hash) : 0;
    append_person_entry(value, previous, e);
}

const char *decode_person_entries(std::string_view value,
                                  std::vector<person_entry> &entries) {
    entries.clear();
    if (value.empty())
        return "no entries";
    uint64_t id = 0;
    while (!value.empty()) {
        uint64_t word = 0;
        if (!get_varint(value, word))
            return "truncated entry";
        uint64_t delta = word >> 1;
        // Compared without adding, so a corrupt huge delta cannot wrap.
        if (delta == 0 || delta > UINT64_MAX - id)
            return "ids not increasing";
        id += delta;
        person_entry e;
        e.id = id;
        e.hashed = (word & 1) != 0;
        if (e.hashed) {
            if (value.size() < sizeof(uint64_t))
                return "truncated entry";
            std::memcpy(&e.digest, value.data(), sizeof(uint64_t));
            value.remove_prefix(sizeof(uint64_t));
        }
        entries.push_back(e);
    }
    return nullptr;
}

std::string encode_face_meta(const face_record &face,
                             std::string_view db_fingerprint) {
    std::string out;
    append_face_meta(out, face, db_fingerprint);
    return out;
}

bool decode_face_meta(std::string_view bytes, std::string_view db_fingerprint,
                      face_record &face) {
    uint64_t fingerprint = 0;
    if (!get_bytes(bytes, face.person) || !get_bytes(bytes, face.source) ||
        !get_varint(bytes, fingerprint) || fingerprint > bytes.size() + 1) {
        return false;
    }
    if (fingerprint == 0) {
        face.model_fingerprint = db_fingerprint;
    } else {
        face.model_fingerprint.assign(bytes.data(), fingerprint - 1);
        bytes.remove_prefix(fingerprint - 1);
    }
    if (bytes.size() < sizeof(int64_t))
        return false;
    std::memcpy(&face.enrolled_at_us, bytes.data(), sizeof(int64_t));
    bytes.remove_prefix(sizeof(int64_t));
    return get_hash(bytes, face.content_hash) && bytes.empty();
}

void encode_face_value(const face_record &face, std::string_view db_fingerprint,
                       std::string &out) {
    out.clear();
    append_face_meta(out, face, db_fingerprint);
    out.append(reinterpret_cast<const char *>(face.embedding.data()),
               face.embedding.size() * sizeof(float));
}

bool split_face_value(std::string_view value, uint32_t dim,
                      std::string_view &meta, std::string_view &embedding) {
    size_t bytes = size_t{dim} * sizeof(float);
    if (value.size() < bytes)
        return false;
    meta = value.substr(0, value.size() - bytes);
    embedding = value.substr(value.size() - bytes);
    return true;
}

bool decode_face_person(std::string_view bytes, std::string_view &person) {
    uint64_t n = 0;
    if (!get_varint(bytes, n) || n > bytes.size())
        return false;
    person = bytes.substr(0, n);
    return true;
}

}  // namespace facevec::storage::internal
