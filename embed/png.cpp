// PNG decoding with libpng. libpng's error callback must not return: ours
// longjmps back to guarded(), as in jpeg.cpp, with only libpng's C frames
// and trivially destructible lambdas in between.
#include <png.h>

#include <csetjmp>
#include <cstring>
#include <vector>

#include "common/log.h"
#include "embed/image_internal.h"

namespace facevec::embed::internal {
namespace {

constexpr size_t kMessageBytes = 256;
constexpr int kRgbaChannels = 4;
constexpr char kExifHeader[] = "Exif\0";  // 6 bytes with the final NUL
constexpr size_t kExifHeaderBytes = sizeof kExifHeader;

struct reader {
    std::span<const uint8_t> bytes;
    size_t offset = 0;
    std::jmp_buf jump;
    char message[kMessageBytes] = {};
};

[[noreturn]] void on_error(png_structp png, png_const_charp text) {
    auto *r = static_cast<reader *>(png_get_error_ptr(png));
    std::snprintf(r->message, sizeof r->message, "%s", text);
    std::longjmp(r->jump, 1);
}

void on_warning(png_structp, png_const_charp text) {
    facevec::logger()->debug("libpng: {}", text);
}

void on_read(png_structp png, png_bytep out, size_t length) {
    auto *r = static_cast<reader *>(png_get_io_ptr(png));
    if (r->bytes.size() - r->offset < length) {
        png_error(png, "truncated file (premature end of data)");
    }
    std::memcpy(out, r->bytes.data() + r->offset, length);
    r->offset += length;
}

template <typename Step>
bool guarded(reader &r, Step &&step) {
    if (setjmp(r.jump) != 0)
        return false;
    step();
    return true;
}

struct png_session {
    png_structp png = nullptr;
    png_infop info = nullptr;
    ~png_session() {
        if (png != nullptr)
            png_destroy_read_struct(&png, &info, nullptr);
    }
};

// The EXIF orientation of an eXIf chunk, 1 when there is none.
int orientation_from_exif_chunk(png_structp png, png_infop info) {
    png_uint_32 size = 0;
    png_bytep data = nullptr;
    if (png_get_eXIf_1(png, info, &size, &data) == 0 || data == nullptr) {
        return 1;
    }
    std::vector<uint8_t> block(kExifHeader, kExifHeader + kExifHeaderBytes);
    block.insert(block.end(), data, data + size);
    return exif_orientation(block);
}

// Asks libpng for 8-bit RGB or RGBA whatever the stored format.
void request_rgb8(png_structp png, png_infop info) {
    int colour = png_get_color_type(png, info);
    if (colour == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (colour == PNG_COLOR_TYPE_GRAY || colour == PNG_COLOR_TYPE_GRAY_ALPHA) {
        png_set_expand_gray_1_2_4_to_8(png);
        png_set_gray_to_rgb(png);
    }
    if (png_get_valid(png, info, PNG_INFO_tRNS) != 0) {
        png_set_tRNS_to_alpha(png);
    }
    png_set_scale_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

void composite_rgba(const std::vector<uint8_t> &rgba,
                    std::vector<uint8_t> &rgb) {
    size_t pixels = rgba.size() / kRgbaChannels;
    for (size_t i = 0; i < pixels; ++i) {
        const uint8_t *p = &rgba[i * kRgbaChannels];
        for (int c = 0; c < 3; ++c) {
            rgb[i * 3 + c] = over_background(p[c], p[3], kBackground[c]);
        }
    }
}

}  // namespace

result<image> decode_png(std::span<const uint8_t> bytes,
                         const std::string &name, const decode_options &opts) {
    reader r;
    r.bytes = bytes;
    png_session s;
    s.png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, on_error, on_warning);
    if (s.png == nullptr) {
        return status(error_code::internal, name + ": libpng setup failed");
    }
    s.info = png_create_info_struct(s.png);
    if (s.info == nullptr) {
        return status(error_code::internal, name + ": libpng setup failed");
    }
    png_set_read_fn(s.png, &r, on_read);

    bool ok = guarded(r, [&] { png_read_info(s.png, s.info); });
    if (!ok)
        return corruption(name + ": " + r.message);
    FACEVEC_RETURN_IF_ERROR(
        check_dimensions(name, png_get_image_width(s.png, s.info),
                         png_get_image_height(s.png, s.info), opts));

    ok = guarded(r, [&] { request_rgb8(s.png, s.info); });
    if (!ok)
        return corruption(name + ": " + r.message);
    image out;
    out.width = static_cast<int>(png_get_image_width(s.png, s.info));
    out.height = static_cast<int>(png_get_image_height(s.png, s.info));
    int channels = png_get_channels(s.png, s.info);
    FACEVEC_ASSERT(channels == 3 || channels == kRgbaChannels,
                   "libpng gave " + std::to_string(channels) + " channels");
    size_t stride = static_cast<size_t>(out.width) * channels;
    FACEVEC_ASSERT(png_get_rowbytes(s.png, s.info) == stride,
                   "unexpected PNG row size");

    out.rgb.resize(static_cast<size_t>(out.width) * out.height * 3);
    std::vector<uint8_t> rgba;
    if (channels == kRgbaChannels)
        rgba.resize(stride * out.height);
    uint8_t *pixels = channels == 3 ? out.rgb.data() : rgba.data();
    std::vector<png_bytep> rows(static_cast<size_t>(out.height));
    for (size_t y = 0; y < rows.size(); ++y)
        rows[y] = pixels + y * stride;

    ok = guarded(r, [&] {
        png_read_image(s.png, rows.data());
        png_read_end(s.png, s.info);
    });
    if (!ok)
        return corruption(name + ": " + r.message);

    if (channels == kRgbaChannels)
        composite_rgba(rgba, out.rgb);
    int orientation = orientation_from_exif_chunk(s.png, s.info);
    if (orientation != 1)
        return apply_orientation(out, orientation);
    return out;
}

}  // namespace facevec::embed::internal
