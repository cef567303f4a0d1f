// validate_label: the rules a person label follows (UTF-8 per RFC 3629).
#include <cstdint>
#include <string>

#include "storage/store.h"

namespace facevec::storage {
namespace {

constexpr uint8_t kAsciiEnd = 0x80;
constexpr uint8_t kFirstPrintable = 0x20;
constexpr uint8_t kDelete = 0x7f;
constexpr uint8_t kContinuationMask = 0xc0;
constexpr uint8_t kContinuationTag = 0x80;
constexpr unsigned kContinuationBits = 6;
constexpr uint32_t kContinuationPayload = 0x3f;

// A multi-byte sequence: the lead bytes it starts with, its length, the
// payload bits of the lead byte and the smallest code point it may encode
// (anything smaller is an overlong encoding).
struct sequence_kind {
    uint8_t lead_mask;
    uint8_t lead_tag;
    size_t length;
    uint32_t min_code_point;
};

constexpr sequence_kind kSequenceKinds[] = {
    {0xe0, 0xc0, 2, 0x80},
    {0xf0, 0xe0, 3, 0x800},
    {0xf8, 0xf0, 4, 0x10000},
};

constexpr uint32_t kSurrogateFirst = 0xd800;
constexpr uint32_t kSurrogateLast = 0xdfff;
constexpr uint32_t kMaxCodePoint = 0x10ffff;

std::string at(size_t offset) {
    return " at byte " + std::to_string(offset);
}

std::string hex_byte(uint8_t b) {
    constexpr const char *kDigits = "0123456789ABCDEF";
    constexpr unsigned kNibble = 4;
    constexpr uint8_t kNibbleMask = 0xf;
    return std::string("0x") + kDigits[b >> kNibble] + kDigits[b & kNibbleMask];
}

// Checks the sequence starting at `i`; on success sets `length`.
status check_sequence(const std::string &s, size_t i, size_t &length) {
    auto lead = static_cast<uint8_t>(s[i]);
    const sequence_kind *kind = nullptr;
    for (const sequence_kind &k : kSequenceKinds) {
        if ((lead & k.lead_mask) == k.lead_tag)
            kind = &k;
    }
    if ((lead & kContinuationMask) == kContinuationTag) {
        return invalid_argument(
            "label is not valid UTF-8: unexpected continuation byte" + at(i));
    }
    if (kind == nullptr) {
        return invalid_argument("label is not valid UTF-8: invalid byte " +
                                hex_byte(lead) + at(i));
    }

    uint32_t cp = lead & static_cast<uint8_t>(~kind->lead_mask);
    for (size_t j = 1; j < kind->length; ++j) {
        if (i + j >= s.size() || (static_cast<uint8_t>(s[i + j]) &
                                  kContinuationMask) != kContinuationTag) {
            return invalid_argument(
                "label is not valid UTF-8: truncated sequence" + at(i));
        }
        cp = (cp << kContinuationBits) |
             (static_cast<uint8_t>(s[i + j]) & kContinuationPayload);
    }

    if (cp < kind->min_code_point) {
        return invalid_argument("label is not valid UTF-8: overlong encoding" +
                                at(i));
    }
    if (cp >= kSurrogateFirst && cp <= kSurrogateLast) {
        return invalid_argument(
            "label is not valid UTF-8: surrogate code point" + at(i));
    }
    if (cp > kMaxCodePoint) {
        return invalid_argument(
            "label is not valid UTF-8: code point above U+10FFFF" + at(i));
    }
    length = kind->length;
    return status::ok();
}

}  // namespace

status validate_label(const std::string &label) {
    if (label.empty())
        return invalid_argument("label is empty");
    if (label.size() > kMaxLabelBytes) {
        return invalid_argument("label is " + std::to_string(label.size()) +
                                " bytes, more than the limit of " +
                                std::to_string(kMaxLabelBytes));
    }

    size_t i = 0;
    while (i < label.size()) {
        auto byte = static_cast<uint8_t>(label[i]);
        if (byte == 0) {
            return invalid_argument("label contains a NUL byte" + at(i));
        }
        // Line breaks, tabs and the like would break the one-label-per-
        // line files export writes and the tab-separated listings.
        if (byte < kFirstPrintable || byte == kDelete) {
            return invalid_argument("label contains the control character " +
                                    hex_byte(byte) + at(i));
        }
        if (byte < kAsciiEnd) {
            ++i;
            continue;
        }
        size_t length = 0;
        FACEVEC_RETURN_IF_ERROR(check_sequence(label, i, length));
        i += length;
    }
    return status::ok();
}

}  // namespace facevec::storage
