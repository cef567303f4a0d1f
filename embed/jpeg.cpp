// JPEG decoding with libjpeg-turbo's libjpeg API. libjpeg reports errors
// by calling error_exit, which must not return: ours longjmps back to
// guarded(), whose caller then returns a status. Only libjpeg's C frames
// and trivially destructible lambdas lie between the two, so no C++
// destructor is skipped.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>

#include "common/log.h"
#include "embed/image_internal.h"

namespace facevec::embed::internal {
namespace {

constexpr int kApp1 = JPEG_APP0 + 1;
constexpr unsigned kMaxMarkerBytes = 0xFFFF;
constexpr char kExifHeader[] = "Exif\0";  // 6 bytes with the final NUL
constexpr size_t kExifHeaderBytes = sizeof kExifHeader;
constexpr int kDctScaleDenom = 8;
constexpr int kCmykChannels = 4;
constexpr int kFullInk = 255;

struct error_manager {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    bool over_scan_limit;
};

// Warnings that leave the pixels intact; every other warning means data
// is missing or corrupt and fails the decode.
bool is_harmless_warning(int code) {
    return code == JWRN_ADOBE_XFORM || code == JWRN_JFIF_MAJOR ||
           code == JWRN_BOGUS_ICC || code == JWRN_EXTRANEOUS_DATA;
}

[[noreturn]] void fail_decode(j_common_ptr cinfo) {
    auto *err = reinterpret_cast<error_manager *>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
}

void on_error_exit(j_common_ptr cinfo) {
    fail_decode(cinfo);
}

void on_emit_message(j_common_ptr cinfo, int level) {
    bool warning = level < 0;
    if (!warning)
        return;  // trace messages
    if (!is_harmless_warning(cinfo->err->msg_code))
        fail_decode(cinfo);
    cinfo->err->num_warnings++;
}

void on_output_message(j_common_ptr cinfo) {
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    facevec::logger()->debug("libjpeg: {}", text);
}

struct progress_manager {
    jpeg_progress_mgr pub;
};

// Called by libjpeg while it reads data: bounds the work a progressive
// file made of many tiny scans can cause.
void on_progress(j_common_ptr cinfo) {
    auto *dinfo = reinterpret_cast<j_decompress_ptr>(cinfo);
    if (dinfo->input_scan_number <= kMaxJpegScans)
        return;
    auto *err = reinterpret_cast<error_manager *>(cinfo->err);
    err->over_scan_limit = true;
    std::snprintf(err->message, sizeof err->message,
                  "progressive JPEG has more than %d scans", kMaxJpegScans);
    std::longjmp(err->jump, 1);
}

// Runs `step` (calls into libjpeg); false when libjpeg failed, with the
// reason in err.message. `step` must hold no objects with destructors.
template <typename Step>
bool guarded(error_manager &err, Step &&step) {
    if (setjmp(err.jump) != 0)
        return false;
    step();
    return true;
}

struct decompressor {
    jpeg_decompress_struct cinfo{};
    error_manager err{};
    progress_manager progress{};
    bool created = false;

    decompressor() {
        cinfo.err = jpeg_std_error(&err.pub);
        err.pub.error_exit = on_error_exit;
        err.pub.emit_message = on_emit_message;
        err.pub.output_message = on_output_message;
        progress.pub.progress_monitor = on_progress;
    }
    ~decompressor() {
        if (created)
            jpeg_destroy_decompress(&cinfo);
    }
    decompressor(const decompressor &) = delete;
    decompressor &operator=(const decompressor &) = delete;

    status failure(const std::string &name) const {
        error_code code = err.over_scan_limit ? error_code::resource_exhausted
                                              : error_code::corruption;
        return status(code, name + ": " + err.message);
    }
};

int orientation_from_markers(const jpeg_decompress_struct &cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr;
         m = m->next) {
        bool is_exif = m->marker == kApp1 &&
                       m->data_length >= kExifHeaderBytes &&
                       std::memcmp(m->data, kExifHeader, kExifHeaderBytes) == 0;
        if (is_exif)
            return exif_orientation({m->data, m->data_length});
    }
    return 1;
}

// The smallest DCT scale n/8 whose output keeps the shorter side at least
// `min_side` (and kMinImageSide); 8/8 when no scaling fits. Only 1/8, 2/8
// and 4/8: libjpeg-turbo has SIMD code for these, while 3/8, 5/8, 6/8 and
// 7/8 run plain C and 5/8 to 7/8 decode slower than the full size (a
// 250x250 photo at 5/8: 1.6x the time of the full-size decode).
int scale_numerator(const jpeg_decompress_struct &cinfo, int min_side) {
    constexpr int kFastNumerators[] = {1, 2, 4};
    if (min_side <= 0)
        return kDctScaleDenom;
    int64_t shorter = std::min(cinfo.image_width, cinfo.image_height);
    int64_t wanted = std::max(min_side, kMinImageSide);
    for (int num : kFastNumerators) {
        int64_t scaled = (shorter * num + kDctScaleDenom - 1) / kDctScaleDenom;
        if (scaled >= wanted)
            return num;
    }
    return kDctScaleDenom;
}

// CMYK samples to RGB. Adobe-marked files store inverted ink (255 = no
// ink); others store ink as is.
void cmyk_to_rgb(const std::vector<uint8_t> &cmyk, bool inverted,
                 std::vector<uint8_t> &rgb) {
    size_t pixels = cmyk.size() / kCmykChannels;
    for (size_t i = 0; i < pixels; ++i) {
        const uint8_t *p = &cmyk[i * kCmykChannels];
        uint32_t k = inverted ? p[3] : kFullInk - p[3];
        for (int c = 0; c < 3; ++c) {
            uint32_t v = inverted ? p[c] : kFullInk - p[c];
            rgb[i * 3 + c] =
                static_cast<uint8_t>((v * k + kFullInk / 2) / kFullInk);
        }
    }
}

}  // namespace

result<image> decode_jpeg(std::span<const uint8_t> bytes,
                          const std::string &name, const decode_options &opts) {
    decompressor d;
    jpeg_decompress_struct *cinfo = &d.cinfo;

    bool ok = guarded(d.err, [&] {
        jpeg_create_decompress(cinfo);
        d.created = true;
        cinfo->progress = &d.progress.pub;
        jpeg_mem_src(cinfo, bytes.data(), bytes.size());
        jpeg_save_markers(cinfo, kApp1, kMaxMarkerBytes);
        jpeg_read_header(cinfo, TRUE);
    });
    if (!ok)
        return d.failure(name);
    // Limitation: a progressive JPEG keeps all its DCT coefficients in
    // memory, about 6 bytes a pixel (300 MB at kMaxImagePixels).
    FACEVEC_RETURN_IF_ERROR(
        check_dimensions(name, cinfo->image_width, cinfo->image_height, opts));
    int orientation = orientation_from_markers(*cinfo);

    // CMYK and YCCK come out as CMYK (libjpeg undoes YCCK), converted
    // below; everything else straight to RGB.
    bool cmyk = cinfo->jpeg_color_space == JCS_CMYK ||
                cinfo->jpeg_color_space == JCS_YCCK;
    bool inverted = cmyk && cinfo->saw_Adobe_marker;
    cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    cinfo->scale_num = scale_numerator(*cinfo, opts.min_side);
    cinfo->scale_denom = kDctScaleDenom;
    ok = guarded(d.err, [&] { jpeg_calc_output_dimensions(cinfo); });
    if (!ok)
        return d.failure(name);

    image out;
    out.width = static_cast<int>(cinfo->output_width);
    out.height = static_cast<int>(cinfo->output_height);
    out.rgb.resize(static_cast<size_t>(out.width) * out.height * 3);
    std::vector<uint8_t> cmyk_pixels;
    if (cmyk)
        cmyk_pixels.resize(out.rgb.size() / 3 * kCmykChannels);
    uint8_t *pixels = cmyk ? cmyk_pixels.data() : out.rgb.data();
    size_t stride = static_cast<size_t>(out.width) * (cmyk ? kCmykChannels : 3);
    std::vector<JSAMPROW> rows(static_cast<size_t>(out.height));
    for (size_t y = 0; y < rows.size(); ++y)
        rows[y] = pixels + y * stride;

    ok = guarded(d.err, [&] {
        jpeg_start_decompress(cinfo);
        while (cinfo->output_scanline < cinfo->output_height) {
            jpeg_read_scanlines(cinfo, &rows[cinfo->output_scanline],
                                cinfo->output_height - cinfo->output_scanline);
        }
        jpeg_finish_decompress(cinfo);
    });
    if (!ok)
        return d.failure(name);

    if (cmyk)
        cmyk_to_rgb(cmyk_pixels, inverted, out.rgb);
    if (orientation != 1)
        return apply_orientation(out, orientation);
    return out;
}

}  // namespace facevec::embed::internal
