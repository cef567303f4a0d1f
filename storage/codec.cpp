#include "storage/codec.h"

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

void append_face_meta(std::string &out, const face_record &face) {
    put_bytes(out, face.person);
    put_bytes(out, face.source);
    put_bytes(out, face.model_fingerprint);
    char when[sizeof(int64_t)];
    std::memcpy(when, &face.enrolled_at_us, sizeof when);
    out.append(when, sizeof when);
    put_bytes(out, face.content_hash);
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

std::string person_prefix(const std::string &person) {
    std::string key = person;
    key.push_back(kLabelSeparator);
    return key;
}

std::string person_hash_prefix(const std::string &person,
                               const std::string &hash) {
    std::string key = person_prefix(person);
    put_bytes(key, hash);
    return key;
}

void append_person_key(std::string &out, const std::string &person,
                       const std::string &hash, uint64_t id) {
    out.append(person);
    out.push_back(kLabelSeparator);
    put_bytes(out, hash);
    out.append(id_key(id));
}

std::optional<uint64_t> id_of_person_key(std::string_view key,
                                         size_t prefix_size) {
    if (key.size() < prefix_size)
        return std::nullopt;
    key.remove_prefix(prefix_size);
    uint64_t hash_size = 0;
    // Compared without adding, so a corrupt huge size cannot wrap.
    if (!get_varint(key, hash_size) || hash_size > key.size() ||
        key.size() - hash_size != kIdBytes) {
        return std::nullopt;
    }
    return decode_u64(key.substr(hash_size));
}

std::string encode_face_meta(const face_record &face) {
    std::string out;
    append_face_meta(out, face);
    return out;
}

bool decode_face_meta(std::string_view bytes, face_record &face) {
    if (!get_bytes(bytes, face.person) || !get_bytes(bytes, face.source) ||
        !get_bytes(bytes, face.model_fingerprint) ||
        bytes.size() < sizeof(int64_t)) {
        return false;
    }
    std::memcpy(&face.enrolled_at_us, bytes.data(), sizeof(int64_t));
    bytes.remove_prefix(sizeof(int64_t));
    return get_bytes(bytes, face.content_hash) && bytes.empty();
}

void encode_face_value(const face_record &face, std::string &out) {
    out.clear();
    append_face_meta(out, face);
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
