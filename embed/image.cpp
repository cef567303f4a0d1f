#include "embed/image.h"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "embed/image_internal.h"

namespace facevec::embed {
namespace {

constexpr std::array<uint8_t, 3> kJpegMagic = {0xFF, 0xD8, 0xFF};
constexpr std::array<uint8_t, 8> kPngMagic = {0x89, 'P',  'N',  'G',
                                              '\r', '\n', 0x1A, '\n'};
// Bytes shown in the message for an unrecognised format.
constexpr size_t kShownMagicBytes = 8;

bool starts_with(std::span<const uint8_t> bytes,
                 std::span<const uint8_t> magic) {
    return bytes.size() >= magic.size() &&
           std::equal(magic.begin(), magic.end(), bytes.begin());
}

std::string hex_prefix(std::span<const uint8_t> bytes) {
    std::string out;
    size_t n = std::min(bytes.size(), kShownMagicBytes);
    for (size_t i = 0; i < n; ++i) {
        char buf[4];
        std::snprintf(buf, sizeof buf, i == 0 ? "%02x" : " %02x", bytes[i]);
        out += buf;
    }
    return out;
}

std::string errno_text(int err) {
    return std::strerror(err);
}

// The whole file at `path`, refusing files over kMaxFileBytes before
// reading them.
result<std::vector<uint8_t>> read_file(const std::string &path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        std::string reason = "cannot open: " + errno_text(err);
        if (err == ENOENT)
            return not_found(path + ": no such file");
        return io_error(path + ": " + reason);
    }
    struct fd_closer {
        int fd;
        ~fd_closer() { ::close(fd); }
    } closer{fd};

    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        return io_error(path + ": cannot stat: " + errno_text(errno));
    }
    if (S_ISDIR(st.st_mode))
        return io_error(path + ": is a directory");
    if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) {
        return status(error_code::resource_exhausted,
                      path + ": file of " + std::to_string(st.st_size) +
                          " bytes exceeds the limit of " +
                          std::to_string(kMaxFileBytes) + " bytes");
    }

    std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return io_error(path + ": cannot read: " + errno_text(errno));
        if (n == 0)
            break;
        done += static_cast<size_t>(n);
    }
    bytes.resize(done);
    return bytes;
}

// Maps an output pixel (x, y) of the upright image to the stored pixel,
// for an image stored as width x height.
struct orientation_map {
    int orientation;
    int width;
    int height;

    std::pair<int, int> source(int x, int y) const {
        switch (orientation) {
            case 2:
                return {width - 1 - x, y};
            case 3:
                return {width - 1 - x, height - 1 - y};
            case 4:
                return {x, height - 1 - y};
            case 5:
                return {y, x};
            case 6:
                return {y, height - 1 - x};
            case 7:
                return {width - 1 - y, height - 1 - x};
            case 8:
                return {width - 1 - y, x};
            default:
                return {x, y};
        }
    }
};

constexpr int kFirstSwappingOrientation = 5;
constexpr int kLastOrientation = 8;

}  // namespace

namespace internal {

status check_dimensions(const std::string &name, int64_t width, int64_t height,
                        const decode_options &opts) {
    std::string size = std::to_string(width) + "x" + std::to_string(height);
    if (width <= 0 || height <= 0) {
        return corruption(name + ": invalid image size " + size);
    }
    if (width > kMaxImageSide || height > kMaxImageSide) {
        return status(error_code::resource_exhausted,
                      name + ": image of " + size +
                          " pixels exceeds the limit of " +
                          std::to_string(kMaxImageSide) + " pixels per side");
    }
    if (width * height > kMaxImagePixels) {
        return status(error_code::resource_exhausted,
                      name + ": image of " + size + " pixels (" +
                          std::to_string(width * height) +
                          ") exceeds the limit of " +
                          std::to_string(kMaxImagePixels) + " pixels");
    }
    const auto pixels = static_cast<uint64_t>(width * height);
    if (opts.max_pixels > 0 && pixels > opts.max_pixels) {
        return status(error_code::resource_exhausted,
                      name + ": " + std::to_string(width) + " x " +
                          std::to_string(height) + " = " +
                          std::to_string(pixels) + " pixels, the limit is " +
                          std::to_string(opts.max_pixels));
    }
    if (std::min(width, height) < kMinImageSide) {
        return invalid_argument(name + ": image of " + size +
                                " pixels is too small: the shorter side "
                                "must be at least " +
                                std::to_string(kMinImageSide) + " pixels");
    }
    return status::ok();
}

}  // namespace internal

image_format detect_format(std::span<const uint8_t> bytes) {
    if (starts_with(bytes, kJpegMagic))
        return image_format::jpeg;
    if (starts_with(bytes, kPngMagic))
        return image_format::png;
    if (bytes.size() >= 2 && bytes[0] == 'P') {
        if (bytes[1] == '5')
            return image_format::pgm;
        if (bytes[1] == '6')
            return image_format::ppm;
    }
    return image_format::unknown;
}

result<image> decode_bytes(std::span<const uint8_t> bytes,
                           const std::string &name,
                           const decode_options &opts) {
    if (bytes.empty())
        return corruption(name + ": empty file");
    if (bytes.size() > kMaxFileBytes) {
        return status(error_code::resource_exhausted,
                      name + ": buffer of " + std::to_string(bytes.size()) +
                          " bytes exceeds the limit of " +
                          std::to_string(kMaxFileBytes) + " bytes");
    }
    switch (detect_format(bytes)) {
        case image_format::jpeg:
            return internal::decode_jpeg(bytes, name, opts);
        case image_format::png:
            return internal::decode_png(bytes, name, opts);
        case image_format::pgm:
        case image_format::ppm:
            return internal::decode_pnm(bytes, name, opts);
        case image_format::unknown:
            break;
    }
    if (bytes.size() >= 2 && bytes[0] == 'P' && bytes[1] >= '1' &&
        bytes[1] <= '7') {
        return status(error_code::unsupported,
                      name + ": netpbm format P" +
                          std::string(1, static_cast<char>(bytes[1])) +
                          " is not supported (only binary P5 and P6)");
    }
    return status(error_code::unsupported,
                  name + ": not a JPEG, PNG, PGM or PPM file (starts with " +
                      hex_prefix(bytes) + ")");
}

result<image> decode_file(const std::string &path, const decode_options &opts) {
    auto bytes = read_file(path);
    if (!bytes)
        return bytes.error();
    return decode_bytes(*bytes, path, opts);
}

image apply_orientation(const image &img, int orientation) {
    if (orientation <= 1 || orientation > kLastOrientation)
        return img;
    bool swap = orientation >= kFirstSwappingOrientation;
    image out;
    out.width = swap ? img.height : img.width;
    out.height = swap ? img.width : img.height;
    out.rgb.resize(img.rgb.size());

    orientation_map map{orientation, img.width, img.height};
    uint8_t *dst = out.rgb.data();
    for (int y = 0; y < out.height; ++y) {
        for (int x = 0; x < out.width; ++x, dst += 3) {
            auto [sx, sy] = map.source(x, y);
            const uint8_t *src =
                &img.rgb[(static_cast<size_t>(sy) * img.width + sx) * 3];
            dst[0] = src[0];
            dst[1] = src[1];
            dst[2] = src[2];
        }
    }
    return out;
}

status write_png(const image &img, const std::string &path) {
    size_t expected = static_cast<size_t>(img.width) * img.height * 3;
    if (img.width <= 0 || img.height <= 0 || img.rgb.size() != expected) {
        return invalid_argument(path +
                                ": cannot write an empty image or "
                                "one whose buffer has the wrong size");
    }
    png_image out{};
    out.version = PNG_IMAGE_VERSION;
    out.width = static_cast<png_uint_32>(img.width);
    out.height = static_cast<png_uint_32>(img.height);
    out.format = PNG_FORMAT_RGB;
    int ok = png_image_write_to_file(&out, path.c_str(), /*convert_to_8bit=*/0,
                                     img.rgb.data(), /*row_stride=*/0,
                                     /*colormap=*/nullptr);
    std::string message = out.message;
    png_image_free(&out);
    if (ok == 0)
        return io_error(path + ": cannot write PNG: " + message);
    return status::ok();
}

}  // namespace facevec::embed
