// Image decoding and preprocessing (embed/image.h, embed/preprocess.h).
//
// Fixtures are made at test time: tests/image_fixtures.py writes files
// with Pillow, ImageMagick or by hand, each with the pixels facevec must
// decode computed independently (Pillow's decoder or numpy applying the
// documented rules); the JPEGs that need libjpeg's encoder options (scan
// scripts, CMYK without an Adobe marker, YCCK, large sizes) are written
// here with libjpeg.
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <jpeglib.h>

#include "embed/image.h"
#include "embed/models.h"
#include "embed/preprocess.h"
#include "tests/test_util.h"

namespace facevec::embed {
namespace {

namespace fs = std::filesystem;
using facevec::testing::temp_dir;

constexpr uint32_t kSeed = 20261204;
constexpr int kQualityHigh = 95;

// ---------------------------------------------------------------------
// Fixture files and references.

std::string python() {
    return fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

std::string shell_quoted(const std::string &s) {
    std::string out = "'";
    for (char c : s)
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// The folder of fixtures written by image_fixtures.py, made once per
// process.
const std::string &fixtures() {
    static temp_dir *dir = [] {
        auto *d = new temp_dir();
        std::string cmd = python() + " '" + testing::source_dir() +
                          "/tests/image_fixtures.py' '" + d->str() + "'";
        int rc = std::system(cmd.c_str());
        if (rc != 0) {
            ADD_FAILURE() << "fixture script failed (" << rc << "): " << cmd;
        }
        return d;
    }();
    static const std::string kPath = dir->str();
    return kPath;
}

std::string fixture(const std::string &name) {
    return fixtures() + "/" + name;
}

std::vector<uint8_t> read_bytes(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in),
            std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string &path, const std::vector<uint8_t> &b) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char *>(b.data()),
              static_cast<std::streamsize>(b.size()));
}

// A reference written by image_fixtures.py: "w h\n" then RGB bytes.
image read_ref(const std::string &path) {
    std::vector<uint8_t> bytes = read_bytes(path);
    auto newline = std::find(bytes.begin(), bytes.end(), '\n');
    std::istringstream header(std::string(bytes.begin(), newline));
    image img;
    header >> img.width >> img.height;
    if (newline != bytes.end())
        img.rgb.assign(newline + 1, bytes.end());
    return img;
}

int max_abs_diff(const image &a, const image &b) {
    int worst = 0;
    for (size_t i = 0; i < std::min(a.rgb.size(), b.rgb.size()); ++i) {
        worst = std::max(worst, std::abs(int{a.rgb[i]} - int{b.rgb[i]}));
    }
    return worst;
}

double mean_abs_diff(const image &a, const image &b) {
    double sum = 0;
    for (size_t i = 0; i < std::min(a.rgb.size(), b.rgb.size()); ++i) {
        sum += std::abs(int{a.rgb[i]} - int{b.rgb[i]});
    }
    return a.rgb.empty() ? 0.0 : sum / static_cast<double>(a.rgb.size());
}

void expect_same_size(const image &got, const image &want) {
    ASSERT_EQ(got.width, want.width);
    ASSERT_EQ(got.height, want.height);
    ASSERT_EQ(got.rgb.size(), want.rgb.size());
}

image solid(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
    image img;
    img.width = width;
    img.height = height;
    for (int i = 0; i < width * height; ++i) {
        img.rgb.insert(img.rgb.end(), {r, g, b});
    }
    return img;
}

image noise(int width, int height, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> byte(0, 255);
    image img;
    img.width = width;
    img.height = height;
    img.rgb.resize(static_cast<size_t>(width) * height * 3);
    for (auto &v : img.rgb)
        v = static_cast<uint8_t>(byte(rng));
    return img;
}

// A spec that crops `box` and resizes it to out_w x out_h, with the
// default (identity) mean and scale.
preprocess_spec box_spec(const crop_box &box, int out_w, int out_h) {
    preprocess_spec spec;
    spec.width = out_w;
    spec.height = out_h;
    spec.crop = crop_mode::box;
    spec.box = box;
    return spec;
}

// ---------------------------------------------------------------------
// JPEGs written with libjpeg, for encoder options Pillow lacks.

struct jpeg_recipe {
    int width = 0;
    int height = 0;
    int components = 3;
    J_COLOR_SPACE in_space = JCS_RGB;
    J_COLOR_SPACE file_space = JCS_YCbCr;
    const uint8_t *pixels = nullptr;  // width * height * components
    bool adobe_marker = true;
    std::vector<jpeg_scan_info> scans;  // empty: baseline
    int quality = kQualityHigh;
};

std::vector<uint8_t> encode_jpeg(const jpeg_recipe &r) {
    jpeg_compress_struct cinfo{};
    jpeg_error_mgr err{};
    cinfo.err = jpeg_std_error(&err);
    jpeg_create_compress(&cinfo);
    unsigned char *buffer = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&cinfo, &buffer, &size);

    cinfo.image_width = static_cast<JDIMENSION>(r.width);
    cinfo.image_height = static_cast<JDIMENSION>(r.height);
    cinfo.input_components = r.components;
    cinfo.in_color_space = r.in_space;
    jpeg_set_defaults(&cinfo);
    jpeg_set_colorspace(&cinfo, r.file_space);
    jpeg_set_quality(&cinfo, r.quality, TRUE);
    cinfo.write_Adobe_marker = r.adobe_marker ? TRUE : FALSE;
    if (!r.scans.empty()) {
        cinfo.scan_info = r.scans.data();
        cinfo.num_scans = static_cast<int>(r.scans.size());
    }

    jpeg_start_compress(&cinfo, TRUE);
    size_t stride = static_cast<size_t>(r.width) * r.components;
    while (cinfo.next_scanline < cinfo.image_height) {
        auto *row =
            const_cast<JSAMPROW>(r.pixels + cinfo.next_scanline * stride);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    std::vector<uint8_t> out(buffer, buffer + size);
    std::free(buffer);
    return out;
}

std::vector<uint8_t> encode_rgb_jpeg(const image &img) {
    jpeg_recipe r;
    r.width = img.width;
    r.height = img.height;
    r.pixels = img.rgb.data();
    return encode_jpeg(r);
}

// A progressive scan script: one interleaved DC scan, then every AC
// coefficient of every component in its own scan: 1 + 63 * components.
std::vector<jpeg_scan_info> one_scan_per_coefficient(int components,
                                                     int last_coefficient) {
    std::vector<jpeg_scan_info> scans;
    jpeg_scan_info dc{};
    dc.comps_in_scan = components;
    for (int c = 0; c < components; ++c)
        dc.component_index[c] = c;
    scans.push_back(dc);
    for (int c = 0; c < components; ++c) {
        for (int k = 1; k <= last_coefficient; ++k) {
            jpeg_scan_info ac{};
            ac.comps_in_scan = 1;
            ac.component_index[0] = c;
            ac.Ss = k;
            ac.Se = k;
            scans.push_back(ac);
        }
    }
    return scans;
}

// Sets the frame size in the SOF0/SOF2 marker of a JPEG.
void patch_jpeg_size(std::vector<uint8_t> &jpeg, int width, int height) {
    constexpr uint8_t kSof0 = 0xC0;
    constexpr uint8_t kSof2 = 0xC2;
    for (size_t i = 0; i + 9 < jpeg.size(); ++i) {
        if (jpeg[i] == 0xFF && (jpeg[i + 1] == kSof0 || jpeg[i + 1] == kSof2)) {
            jpeg[i + 5] = static_cast<uint8_t>(height >> 8);
            jpeg[i + 6] = static_cast<uint8_t>(height & 0xFF);
            jpeg[i + 7] = static_cast<uint8_t>(width >> 8);
            jpeg[i + 8] = static_cast<uint8_t>(width & 0xFF);
            return;
        }
    }
    ADD_FAILURE() << "no SOF marker";
}

std::vector<uint8_t> ppm_bytes(const image &img) {
    std::string header = "P6\n" + std::to_string(img.width) + " " +
                         std::to_string(img.height) + "\n255\n";
    std::vector<uint8_t> out(header.begin(), header.end());
    out.insert(out.end(), img.rgb.begin(), img.rgb.end());
    return out;
}

std::span<const uint8_t> as_bytes(const std::string &s) {
    return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

// ---------------------------------------------------------------------
// Every format and variant against its independent reference.

struct reference_case {
    const char *file;
    int tolerance;  // largest allowed difference of one sample
};

// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class DecodeMatchesReference : public ::testing::TestWithParam<reference_case> {
};

TEST_P(DecodeMatchesReference, FromPathAndFromBytes) {
    const reference_case &c = GetParam();
    image want = read_ref(fixture(std::string(c.file) + ".ref"));

    auto from_path = decode_file(fixture(c.file));
    ASSERT_TRUE(from_path.is_ok()) << from_path.error().to_string();
    expect_same_size(*from_path, want);
    EXPECT_LE(max_abs_diff(*from_path, want), c.tolerance);

    auto from_bytes = decode_bytes(read_bytes(fixture(c.file)), c.file);
    ASSERT_TRUE(from_bytes.is_ok()) << from_bytes.error().to_string();
    EXPECT_EQ(from_bytes->rgb, from_path->rgb);
}

// Pillow decodes JPEGs with the same libjpeg-turbo and settings: exact.
// CMYK: Pillow's conversion rounds differently by at most 1.
const reference_case kReferenceCases[] = {
    {"baseline.jpg", 0},     {"progressive.jpg", 0}, {"subsampling444.jpg", 0},
    {"gray.jpg", 0},         {"cmyk_pil.jpg", 1},    {"rgb8.png", 0},
    {"gray8.png", 0},        {"rgba8.png", 0},       {"gray_alpha8.png", 0},
    {"palette_trns.png", 0}, {"gray16.png", 0},      {"rgb16.png", 0},
    {"rgba16.png", 0},       {"gray1bit.png", 0},    {"gray2bit.png", 0},
    {"gray4bit.png", 0},     {"interlaced.png", 0},  {"gray8.pgm", 0},
    {"gray16.pgm", 0},       {"gray15.pgm", 0},      {"rgb8.ppm", 0},
    {"rgb16.ppm", 0},        {"rgb1000.ppm", 0},     {"exif1.jpg", 0},
    {"exif2.jpg", 0},        {"exif3.jpg", 0},       {"exif4.jpg", 0},
    {"exif5.jpg", 0},        {"exif6.jpg", 0},       {"exif7.jpg", 0},
    {"exif8.jpg", 0},        {"exif1.png", 0},       {"exif2.png", 0},
    {"exif3.png", 0},        {"exif4.png", 0},       {"exif5.png", 0},
    {"exif6.png", 0},        {"exif7.png", 0},       {"exif8.png", 0},
};

// Shown by gtest (and in ctest's test names) instead of the raw bytes.
void PrintTo(const reference_case &c, std::ostream *out) {  // NOLINT
    *out << c.file;
}

std::string case_name(const ::testing::TestParamInfo<reference_case> &i) {
    std::string name = i.param.file;
    std::replace(name.begin(), name.end(), '.', '_');
    return name;
}

INSTANTIATE_TEST_SUITE_P(Formats, DecodeMatchesReference,
                         ::testing::ValuesIn(kReferenceCases), case_name);

TEST(ImageDecodeTest, ImageMagickYcckJpegLooksLikeItsSrgbSource) {
    // ImageMagick writes YCCK with an Adobe marker (inverted CMYK); read
    // as plain ink every colour would come out inverted.
    auto got = decode_file(fixture("cmyk_im.jpg"));
    ASSERT_TRUE(got.is_ok()) << got.error().to_string();
    image want = read_ref(fixture("cmyk_im.jpg.ref"));
    expect_same_size(*got, want);
    EXPECT_LT(mean_abs_diff(*got, want), 3.0);
}

TEST(ImageDecodeTest, CmykJpegIsInvertedOnlyWithAdobeMarker) {
    // One ink mix, stored inverted (Adobe) or as is (no marker).
    constexpr uint8_t kInk[4] = {0, 128, 255, 64};
    constexpr int kSide = 16;
    const image want = solid(kSide, kSide, 191, 95, 0);  // (255-c)(255-k)
    for (bool adobe : {true, false}) {
        std::vector<uint8_t> cmyk;
        for (int i = 0; i < kSide * kSide; ++i) {
            for (uint8_t ink : kInk) {
                cmyk.push_back(adobe ? static_cast<uint8_t>(255 - ink) : ink);
            }
        }
        jpeg_recipe r;
        r.width = r.height = kSide;
        r.components = 4;
        r.in_space = r.file_space = JCS_CMYK;
        r.pixels = cmyk.data();
        r.adobe_marker = adobe;
        r.quality = 100;
        auto got = decode_bytes(encode_jpeg(r), "cmyk.jpg");
        ASSERT_TRUE(got.is_ok()) << got.error().to_string();
        expect_same_size(*got, want);
        EXPECT_LE(max_abs_diff(*got, want), 2) << "adobe marker " << adobe;
    }
}

TEST(ImageDecodeTest, YcckJpegFromLibjpegIsConverted) {
    constexpr uint8_t kInk[4] = {255 - 200, 255 - 10, 255 - 100, 255 - 0};
    constexpr int kSide = 16;
    std::vector<uint8_t> cmyk;
    for (int i = 0; i < kSide * kSide; ++i) {
        cmyk.insert(cmyk.end(), std::begin(kInk), std::end(kInk));
    }
    jpeg_recipe r;
    r.width = r.height = kSide;
    r.components = 4;
    r.in_space = JCS_CMYK;
    r.file_space = JCS_YCCK;
    r.pixels = cmyk.data();
    r.quality = 100;
    auto got = decode_bytes(encode_jpeg(r), "ycck.jpg");
    ASSERT_TRUE(got.is_ok()) << got.error().to_string();
    // Stored inverted (Adobe), so R = c' * k' / 255 with k' = 255.
    const image want = solid(kSide, kSide, 55, 245, 155);
    EXPECT_LE(max_abs_diff(*got, want), 2);
}

TEST(ImageDecodeTest, TransparentPixelsDecodeAlikeWhateverTheyHide) {
    auto a = decode_file(fixture("hidden0.png"));
    auto b = decode_file(fixture("hidden1.png"));
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    EXPECT_EQ(a->rgb, b->rgb);
    // Row 0 is fully transparent: the documented background.
    for (int x = 0; x < a->width; ++x) {
        for (int c = 0; c < 3; ++c) {
            EXPECT_EQ(a->rgb[x * 3 + c], kBackground[c]);
        }
    }
}

TEST(ImageDecodeTest, FormatComesFromBytesNotName) {
    std::string renamed = fixture("really_a_png.jpg");
    fs::copy_file(fixture("rgb8.png"), renamed,
                  fs::copy_options::overwrite_existing);
    auto got = decode_file(renamed);
    ASSERT_TRUE(got.is_ok()) << got.error().to_string();
    EXPECT_EQ(got->rgb, read_ref(fixture("rgb8.png.ref")).rgb);
    EXPECT_EQ(detect_format(read_bytes(renamed)), image_format::png);
    EXPECT_EQ(detect_format(read_bytes(fixture("baseline.jpg"))),
              image_format::jpeg);
    EXPECT_EQ(detect_format(read_bytes(fixture("gray8.pgm"))),
              image_format::pgm);
}

TEST(ImageDecodeTest, ApplyOrientationRoundTripsThroughInverse) {
    // 6 (90 cw) undone by 8 (90 ccw); 5 and 7 are their own inverses.
    image img = noise(5, 3, kSeed);
    EXPECT_EQ(apply_orientation(apply_orientation(img, 6), 8).rgb, img.rgb);
    EXPECT_EQ(apply_orientation(apply_orientation(img, 5), 5).rgb, img.rgb);
    EXPECT_EQ(apply_orientation(apply_orientation(img, 7), 7).rgb, img.rgb);
    image turned = apply_orientation(img, 6);
    EXPECT_EQ(turned.width, 3);
    EXPECT_EQ(turned.height, 5);
    EXPECT_EQ(apply_orientation(img, 9).rgb, img.rgb);
}

// ---------------------------------------------------------------------
// Scaled JPEG decoding.

// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class ScaledDecodeTest : public ::testing::Test {
  protected:
    static constexpr int kWidth = 1920;
    static constexpr int kHeight = 1080;

    void SetUp() override {
        // Smooth content, so the scaled decode and a resize agree.
        full_.width = kWidth;
        full_.height = kHeight;
        full_.rgb.resize(static_cast<size_t>(kWidth) * kHeight * 3);
        for (int y = 0; y < kHeight; ++y) {
            for (int x = 0; x < kWidth; ++x) {
                uint8_t *p =
                    &full_.rgb[(static_cast<size_t>(y) * kWidth + x) * 3];
                p[0] = static_cast<uint8_t>(x * 255 / kWidth);
                p[1] = static_cast<uint8_t>(y * 255 / kHeight);
                p[2] = static_cast<uint8_t>(128 + (x % 64) - (y % 64));
            }
        }
        jpeg_ = encode_rgb_jpeg(full_);
    }

    image full_;
    std::vector<uint8_t> jpeg_;
};

TEST_F(ScaledDecodeTest, MinSideUsesTheSmallestDctScaleThatFits) {
    decode_options opts;
    opts.min_side = 150;  // 1080 * 1/8 = 135 < 150 <= 1080 * 2/8 = 270
    auto got = decode_bytes(jpeg_, "big.jpg", opts);
    ASSERT_TRUE(got.is_ok()) << got.error().to_string();
    EXPECT_EQ(got->width, 480);
    EXPECT_EQ(got->height, 270);

    auto reference = resize(full_, 480, 270);
    ASSERT_TRUE(reference.is_ok());
    EXPECT_LT(mean_abs_diff(*got, *reference), 3.0);
}

TEST_F(ScaledDecodeTest, NoMinSideOrTooLargeMinSideDecodesFullSize) {
    for (int min_side : {0, 1080, 5000}) {
        decode_options opts;
        opts.min_side = min_side;
        auto got = decode_bytes(jpeg_, "big.jpg", opts);
        ASSERT_TRUE(got.is_ok()) << got.error().to_string();
        EXPECT_EQ(got->width, kWidth) << min_side;
        EXPECT_EQ(got->height, kHeight) << min_side;
    }
}

TEST_F(ScaledDecodeTest, ScaledImageNeverGoesBelowMinimumSide) {
    decode_options opts;
    opts.min_side = 1;
    auto got = decode_bytes(jpeg_, "big.jpg", opts);
    ASSERT_TRUE(got.is_ok());
    EXPECT_EQ(got->height, 135);  // 1/8, the smallest scale
    EXPECT_GE(std::min(got->width, got->height), kMinImageSide);
}

TEST_F(ScaledDecodeTest, NeverDecodesBelowMinSide) {
    for (int min_side = 1; min_side <= 1200; min_side += 37) {
        decode_options opts;
        opts.min_side = min_side;
        auto got = decode_bytes(jpeg_, "big.jpg", opts);
        ASSERT_TRUE(got.is_ok()) << got.error().to_string();
        int shorter = std::min(got->width, got->height);
        EXPECT_GE(shorter, std::min(min_side, kHeight)) << min_side;
        EXPECT_GE(shorter, kMinImageSide) << min_side;
    }
}

TEST_F(ScaledDecodeTest, NetworkInputFromScaledDecodeStaysCloseToFullSize) {
    // 1920x1080 -> face-resnet's 150x150: scaled decoding (2/8, 480x270)
    // then the resize, against the full-size decode and the resize.
    // Measured on this gradients + 64-pixel ramps image: mean 0.23, max
    // 3.3 levels of 255 (the DCT scaling is a box filter, ours a
    // triangle, so edges differ a little).
    constexpr double kMeanLevels = 0.5;
    constexpr double kMaxLevels = 5.0;
    const preprocess_spec &spec = *find_preprocess_spec("face-resnet");
    decode_options scaled;
    scaled.min_side = decode_min_side(spec);
    auto small = decode_bytes(jpeg_, "big.jpg", scaled);
    auto full = decode_bytes(jpeg_, "big.jpg");
    ASSERT_TRUE(small.is_ok() && full.is_ok());
    ASSERT_EQ(small->height, 270);
    auto a = preprocess(*small, spec);
    auto b = preprocess(*full, spec);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    double sum = 0;
    double worst = 0;
    for (size_t i = 0; i < a->size(); ++i) {
        int c = static_cast<int>(i / (a->size() / 3));
        double levels = std::abs((*a)[i] - (*b)[i]) / spec.scale[c];
        sum += levels;
        worst = std::max(worst, levels);
    }
    double mean = sum / static_cast<double>(a->size());
    EXPECT_LE(mean, kMeanLevels);
    EXPECT_LE(worst, kMaxLevels);
}

TEST(ImageDecodeTest, OnlyFastDctScalesAreUsedSoLfwSizeStaysFull) {
    // 250x250 (an LFW photo) for a 150-pixel input: 5/8 (157x157) would
    // fit but libjpeg-turbo decodes it in plain C, slower than the full
    // size (measured 1.6x the full decode's time), so the full size is
    // decoded; 4/8 is used once it fits.
    std::vector<uint8_t> jpeg = encode_rgb_jpeg(noise(250, 250, kSeed));
    decode_options opts;
    opts.min_side = 150;
    auto full = decode_bytes(jpeg, "lfw.jpg", opts);
    ASSERT_TRUE(full.is_ok());
    EXPECT_EQ(full->width, 250);
    opts.min_side = 125;
    auto half = decode_bytes(jpeg, "lfw.jpg", opts);
    ASSERT_TRUE(half.is_ok());
    EXPECT_EQ(half->width, 125);
}

TEST(ImageDecodeTest, MinSideLeavesNonJpegAtFullSize) {
    decode_options opts;
    opts.min_side = 8;
    auto got = decode_file(fixture("rgb8.png"), opts);
    ASSERT_TRUE(got.is_ok());
    EXPECT_EQ(got->width, 37);
    EXPECT_EQ(got->height, 23);
}

// ---------------------------------------------------------------------
// Bad input: each with its error code and message.

void expect_error(const result<image> &got, error_code code,
                  const std::vector<std::string> &fragments) {
    ASSERT_FALSE(got.is_ok()) << "decoded " << got->width << "x" << got->height;
    EXPECT_EQ(got.error().code(), code) << got.error().to_string();
    for (const auto &f : fragments) {
        EXPECT_NE(got.error().message().find(f), std::string::npos)
            << "'" << f << "' not in: " << got.error().message();
    }
}

TEST(ImageErrorTest, EmptyFileIsCorruption) {
    temp_dir dir;
    write_bytes(dir.str("empty.jpg"), {});
    expect_error(decode_file(dir.str("empty.jpg")), error_code::corruption,
                 {dir.str("empty.jpg") + ": empty file"});
    expect_error(decode_bytes({}, "upload"), error_code::corruption,
                 {"upload: empty file"});
}

TEST(ImageErrorTest, MissingFileIsNotFound) {
    temp_dir dir;
    expect_error(decode_file(dir.str("absent.jpg")), error_code::not_found,
                 {dir.str("absent.jpg") + ": no such file"});
}

TEST(ImageErrorTest, DirectoryIsIoError) {
    temp_dir dir;
    expect_error(decode_file(dir.str()), error_code::io_error,
                 {dir.str() + ": is a directory"});
}

TEST(ImageErrorTest, OtherFormatsAreUnsupported) {
    expect_error(decode_bytes(as_bytes("GIF89a\x01\x00\x01\x00"), "a.gif"),
                 error_code::unsupported,
                 {"a.gif: not a JPEG, PNG, PGM or PPM file", "47 49 46 38"});
    expect_error(decode_bytes(as_bytes("P3\n2 2\n255\n0 0 0"), "ascii.ppm"),
                 error_code::unsupported,
                 {"ascii.ppm: netpbm format P3 is not supported"});
}

TEST(ImageErrorTest, TruncatedJpegIsCorruptionNeverAGreyImage) {
    for (const char *name : {"baseline.jpg", "progressive.jpg"}) {
        std::vector<uint8_t> bytes = read_bytes(fixture(name));
        bytes.resize(bytes.size() * 2 / 3);
        expect_error(decode_bytes(bytes, name), error_code::corruption,
                     {std::string(name) + ": ", "Premature end of JPEG"});
    }
}

TEST(ImageErrorTest, JpegCutInsideHeaderIsCorruption) {
    std::vector<uint8_t> bytes = read_bytes(fixture("baseline.jpg"));
    bytes.resize(40);
    expect_error(decode_bytes(bytes, "head.jpg"), error_code::corruption,
                 {"head.jpg: "});
}

TEST(ImageErrorTest, JpegWithGarbageScanDataIsCorruption) {
    // Markers inside the entropy-coded data end the segment early.
    std::vector<uint8_t> bytes = read_bytes(fixture("baseline.jpg"));
    size_t sos = 0;
    for (size_t i = 0; i + 1 < bytes.size(); ++i) {
        if (bytes[i] == 0xFF && bytes[i + 1] == 0xDA)
            sos = i;
    }
    ASSERT_GT(sos, 0U);
    size_t data = sos + 20;
    for (size_t i = data; i + 2 < bytes.size() && i < data + 16; i += 2) {
        bytes[i] = 0xFF;
        bytes[i + 1] = 0xD0;  // RST0 out of sequence
    }
    expect_error(decode_bytes(bytes, "garbage.jpg"), error_code::corruption,
                 {"garbage.jpg: Corrupt JPEG data"});
}

TEST(ImageErrorTest, TruncatedPngIsCorruption) {
    std::vector<uint8_t> bytes = read_bytes(fixture("rgb8.png"));
    bytes.resize(bytes.size() / 2);
    expect_error(decode_bytes(bytes, "half.png"), error_code::corruption,
                 {"half.png: truncated file"});
}

TEST(ImageErrorTest, PngWithBadChecksumIsCorruption) {
    std::vector<uint8_t> bytes = read_bytes(fixture("rgb8.png"));
    // The IHDR chunk's CRC occupies bytes 29..32.
    bytes[30] ^= 0xFF;
    expect_error(decode_bytes(bytes, "crc.png"), error_code::corruption,
                 {"crc.png: IHDR: CRC error"});
}

TEST(ImageErrorTest, OversizedPngIsRefusedFromItsHeader) {
    expect_error(decode_file(fixture("huge_side.png")),
                 error_code::resource_exhausted,
                 {"huge_side.png: image of 20000x100 pixels exceeds the "
                  "limit of 16384 pixels per side"});
    expect_error(decode_file(fixture("huge_pixels.png")),
                 error_code::resource_exhausted,
                 {"huge_pixels.png: image of 10000x10000 pixels "
                  "(100000000) exceeds the limit of 50000000 pixels"});
}

TEST(ImageErrorTest, OversizedJpegIsRefusedFromItsHeader) {
    std::vector<uint8_t> bytes = encode_rgb_jpeg(noise(16, 16, kSeed));
    patch_jpeg_size(bytes, 12000, 9000);
    expect_error(decode_bytes(bytes, "huge.jpg"),
                 error_code::resource_exhausted,
                 {"huge.jpg: image of 12000x9000 pixels (108000000) exceeds "
                  "the limit of 50000000 pixels"});
}

TEST(ImageErrorTest, OversizedPpmIsRefusedFromItsHeader) {
    expect_error(decode_bytes(as_bytes("P6\n100000 20\n255\n"), "wide.ppm"),
                 error_code::resource_exhausted,
                 {"wide.ppm: image of 100000x20 pixels exceeds"});
    expect_error(
        decode_bytes(as_bytes("P5 99999999999999999999 9 255\n"), "x.pgm"),
        error_code::resource_exhausted, {"x.pgm: image of "});
}

TEST(ImageErrorTest, BadPnmHeadersAreCorruption) {
    expect_error(decode_bytes(as_bytes("P6\n4 4\n0\n"), "zero.ppm"),
                 error_code::corruption,
                 {"zero.ppm: PPM maxval 0 is not in 1..65535"});
    expect_error(decode_bytes(as_bytes("P5\n4 4\n70000\n"), "deep.pgm"),
                 error_code::corruption,
                 {"deep.pgm: PGM maxval 70000 is not in 1..65535"});
    expect_error(decode_bytes(as_bytes("P6\n4 4"), "short.ppm"),
                 error_code::corruption, {"short.ppm: PPM header is"});
    expect_error(decode_bytes(as_bytes("P6\nfour 4 255\n"), "word.ppm"),
                 error_code::corruption, {"word.ppm: PPM header is malformed"});
}

TEST(ImageErrorTest, TruncatedPpmIsCorruption) {
    std::vector<uint8_t> bytes = ppm_bytes(noise(10, 10, kSeed));
    bytes.resize(bytes.size() - 7);
    expect_error(decode_bytes(bytes, "cut.ppm"), error_code::corruption,
                 {"cut.ppm: truncated PPM: 293 of 300 bytes of pixel data"});
}

TEST(ImageErrorTest, ProgressiveJpegOverScanLimitIsRefused) {
    image img = noise(32, 32, kSeed);
    jpeg_recipe r;
    r.width = r.height = 32;
    r.pixels = img.rgb.data();
    r.scans = one_scan_per_coefficient(3, 63);  // 190 scans
    ASSERT_GT(static_cast<int>(r.scans.size()), kMaxJpegScans);
    expect_error(decode_bytes(encode_jpeg(r), "scans.jpg"),
                 error_code::resource_exhausted,
                 {"scans.jpg: progressive JPEG has more than 100 scans"});
}

TEST(ImageDecodeTest, ProgressiveJpegUnderScanLimitDecodes) {
    image img = noise(32, 32, kSeed);
    jpeg_recipe r;
    r.width = r.height = 32;
    r.pixels = img.rgb.data();
    r.scans = one_scan_per_coefficient(3, 30);  // 91 scans
    ASSERT_LE(static_cast<int>(r.scans.size()), kMaxJpegScans);
    auto got = decode_bytes(encode_jpeg(r), "scans.jpg");
    ASSERT_TRUE(got.is_ok()) << got.error().to_string();
    EXPECT_EQ(got->width, 32);
}

TEST(ImageErrorTest, ImagesBelowMinimumSideAreRefused) {
    for (auto [w, h] : {std::pair{1, 500}, {500, 1}, {7, 20}}) {
        std::string name = std::to_string(w) + "x" + std::to_string(h);
        expect_error(decode_bytes(ppm_bytes(noise(w, h, kSeed)), name + ".ppm"),
                     error_code::invalid_argument,
                     {name + ".ppm: image of " + name +
                      " pixels is too small: the shorter side must be at "
                      "least 8 pixels"});
    }
    std::vector<uint8_t> strip = encode_rgb_jpeg(noise(1, 500, kSeed));
    expect_error(decode_bytes(strip, "strip.jpg"), error_code::invalid_argument,
                 {"strip.jpg: image of 1x500"});
}

TEST(ImageDecodeTest, ImageAtMinimumSideDecodes) {
    image tiny = noise(kMinImageSide, kMinImageSide, kSeed);
    auto got = decode_bytes(ppm_bytes(tiny), "8x8.ppm");
    ASSERT_TRUE(got.is_ok()) << got.error().to_string();
    EXPECT_EQ(got->rgb, tiny.rgb);
    auto jpeg = decode_bytes(encode_rgb_jpeg(tiny), "8x8.jpg");
    ASSERT_TRUE(jpeg.is_ok()) << jpeg.error().to_string();
    EXPECT_EQ(jpeg->width, kMinImageSide);
}

TEST(ImageDecodeTest, BatchKeepsGoodFilesWhenOthersFail) {
    temp_dir dir;
    std::vector<uint8_t> truncated = read_bytes(fixture("baseline.jpg"));
    truncated.resize(truncated.size() / 2);
    write_bytes(dir.str("bad_truncated.jpg"), truncated);
    write_bytes(dir.str("bad_empty.png"), {});
    write_bytes(dir.str("bad_text.jpg"), {'h', 'i'});
    const std::vector<std::string> good = {"baseline.jpg", "rgba16.png",
                                           "rgb16.ppm", "exif6.jpg"};
    std::vector<std::string> batch = {dir.str("bad_truncated.jpg")};
    for (const auto &g : good)
        batch.push_back(fixture(g));
    batch.push_back(dir.str("bad_empty.png"));
    batch.push_back(dir.str("bad_text.jpg"));
    batch.push_back(fixture("huge_side.png"));

    size_t decoded = 0;
    for (const auto &path : batch) {
        auto got = decode_file(path);
        std::string file = fs::path(path).filename().string();
        bool good_file =
            std::find(good.begin(), good.end(), file) != good.end();
        EXPECT_EQ(got.is_ok(), good_file) << path;
        if (got.is_ok()) {
            ++decoded;
            EXPECT_EQ(got->rgb, read_ref(path + ".ref").rgb) << path;
        } else {
            EXPECT_EQ(got.error().message().rfind(path + ": ", 0), 0U)
                << got.error().message();
        }
    }
    EXPECT_EQ(decoded, good.size());
}

TEST(ImageDecodeTest, NonAsciiFileNamesWork) {
    temp_dir dir;
    for (const char *name : {"café.jpg", "Пётр_Ильич.jpg", "张伟.jpg",
                             "😀 face.jpg", "ñandú/ünïcødé.jpg"}) {
        fs::path path = dir.path() / fs::u8path(name);
        fs::create_directories(path.parent_path());
        fs::copy_file(fixture("exif6.jpg"), path);
        auto got = decode_file(path.string());
        ASSERT_TRUE(got.is_ok()) << got.error().to_string();
        EXPECT_EQ(got->rgb, read_ref(fixture("exif6.jpg.ref")).rgb) << name;
    }
    std::string missing = dir.str("ошибка.jpg");
    expect_error(decode_file(missing), error_code::not_found,
                 {missing + ": no such file"});
}

TEST(ImageDecodeTest, WritePngRoundTrips) {
    temp_dir dir;
    image img = noise(19, 11, kSeed);
    ASSERT_TRUE(write_png(img, dir.str("out.png")).is_ok());
    auto back = decode_file(dir.str("out.png"));
    ASSERT_TRUE(back.is_ok());
    EXPECT_EQ(back->rgb, img.rgb);

    status st = write_png(img, dir.str("no/such/dir/out.png"));
    EXPECT_EQ(st.code(), error_code::io_error);
    EXPECT_NE(st.message().find("no/such/dir/out.png: cannot write PNG"),
              std::string::npos)
        << st.message();
    EXPECT_EQ(write_png(image{}, dir.str("e.png")).code(),
              error_code::invalid_argument);
}

// ---------------------------------------------------------------------
// Preprocessing.

// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class ResizeTest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto src = decode_file(fixture("resize_source.png"));
        ASSERT_TRUE(src.is_ok()) << src.error().to_string();
        source_ = *src;
    }
    image source_;
};

TEST_F(ResizeTest, MatchesPillowBilinearDownUpAndMixed) {
    // Pillow rounds its first (horizontal) pass to 8 bits; our first
    // (vertical) pass keeps 7 more bits.
    for (const char *name : {"down", "up", "mixed"}) {
        image want = read_ref(fixture(std::string("resize_") + name + ".ref"));
        auto got = resize(source_, want.width, want.height);
        ASSERT_TRUE(got.is_ok()) << got.error().to_string();
        expect_same_size(*got, want);
        EXPECT_LE(max_abs_diff(*got, want), 1) << name;
    }
}

TEST_F(ResizeTest, CropThenResizeMatchesPillow) {
    image want = read_ref(fixture("resize_crop.ref"));
    crop_box box{5, 3, 20, 15};
    auto cropped = crop(source_, box);
    ASSERT_TRUE(cropped.is_ok());
    auto got = resize(*cropped, want.width, want.height);
    ASSERT_TRUE(got.is_ok());
    EXPECT_LE(max_abs_diff(*got, want), 1);

    // The same through a spec with an identity mean and scale.
    preprocess_spec spec = box_spec(box, want.width, want.height);
    auto input = preprocess(source_, spec);
    ASSERT_TRUE(input.is_ok()) << input.error().to_string();
    auto picture = input_to_image(*input, spec);
    ASSERT_TRUE(picture.is_ok());
    EXPECT_EQ(picture->rgb, got->rgb);
}

TEST_F(ResizeTest, SameSizeIsIdentity) {
    auto got = resize(source_, source_.width, source_.height);
    ASSERT_TRUE(got.is_ok());
    EXPECT_EQ(got->rgb, source_.rgb);
}

TEST_F(ResizeTest, ShrinkingAveragesAwayStripes) {
    // One-pixel stripes shrunk 4x: a plain bilinear sample would alias to
    // black or white; the widened filter gives grey.
    image stripes = solid(64, 64, 0, 0, 0);
    for (int y = 0; y < 64; ++y) {
        for (int x = 1; x < 64; x += 2) {
            for (int c = 0; c < 3; ++c)
                stripes.rgb[(y * 64 + x) * 3 + c] = 255;
        }
    }
    auto got = resize(stripes, 16, 16);
    ASSERT_TRUE(got.is_ok());
    for (uint8_t v : got->rgb) {
        EXPECT_NEAR(v, 128, 16);  // edges weigh their stripes unevenly
    }
}

// The documented resize computed from its definition, independently of
// embed/preprocess.cpp: output pixel (x, y) of the `box` averages the
// inputs around its centre with a triangle filter of radius
// max(in / out, 1) input pixels on each axis, weights normalised, in
// double. Returns out_w x out_h interleaved RGB values in 0..255.
std::vector<double> reference_resize(const image &img, const crop_box &box,
                                     int out_w, int out_h) {
    // weights[o] lists (input index, weight) for output o of one axis.
    auto axis = [](int in, int out) {
        double scale = static_cast<double>(in) / out;
        double radius = std::max(scale, 1.0);
        std::vector<std::vector<std::pair<int, double>>> weights(out);
        for (int o = 0; o < out; ++o) {
            double centre = (o + 0.5) * scale;
            double total = 0;
            for (int i = 0; i < in; ++i) {
                double w = 1.0 - std::abs(i + 0.5 - centre) / radius;
                if (w > 0) {
                    weights[o].emplace_back(i, w);
                    total += w;
                }
            }
            for (auto &[i, w] : weights[o])
                w /= total;
        }
        return weights;
    };
    auto wx = axis(box.width, out_w);
    auto wy = axis(box.height, out_h);
    std::vector<double> out(static_cast<size_t>(out_w) * out_h * 3, 0.0);
    for (int y = 0; y < out_h; ++y) {
        for (int x = 0; x < out_w; ++x) {
            double *o = &out[(static_cast<size_t>(y) * out_w + x) * 3];
            for (auto [j, v] : wy[y]) {
                for (auto [i, u] : wx[x]) {
                    const uint8_t *p =
                        &img.rgb[(static_cast<size_t>(box.y + j) * img.width +
                                  box.x + i) *
                                 3];
                    for (int c = 0; c < 3; ++c)
                        o[c] += v * u * p[c];
                }
            }
        }
    }
    return out;
}

TEST(PreprocessTest, ResizeMatchesItsDefinitionOnOddSizes) {
    // Both passes use fixed-point weights (2^-14 steps, summing to
    // exactly 1) and the vertical one rounds to 2^-7 levels: the error is
    // bounded by about 2 * 255 * taps / 2^14 + 2^-8 levels (0.13 for the
    // 4 taps of 250 -> 150); measured at most 0.014 levels here, mean
    // under 0.0002. Sizes exercise the SIMD steps and their tails (a
    // region 5 pixels wide is 15 bytes, under one 16-byte step), 1 to 9
    // taps, enlarging, and a crop offset.
    constexpr double kTolerance = 0.02;
    constexpr double kMeanTolerance = 0.001;
    struct resize_case {
        int width, height;  // image
        crop_box box;
        int out_w, out_h;
    };
    const resize_case cases[] = {
        {250, 250, {0, 0, 250, 250}, 150, 150},
        {37, 23, {0, 0, 37, 23}, 15, 9},
        {37, 23, {0, 0, 37, 23}, 50, 40},
        {20, 20, {3, 2, 5, 17}, 3, 7},
        {301, 97, {0, 0, 301, 97}, 150, 150},
        {640, 480, {40, 0, 480, 480}, 150, 150},
        {150, 150, {0, 0, 150, 150}, 150, 150},
    };
    uint32_t seed = kSeed;
    for (const resize_case &c : cases) {
        image img = noise(c.width, c.height, seed++);
        auto got = preprocess(img, box_spec(c.box, c.out_w, c.out_h));
        ASSERT_TRUE(got.is_ok()) << got.error().to_string();
        std::vector<double> want =
            reference_resize(img, c.box, c.out_w, c.out_h);
        size_t plane = static_cast<size_t>(c.out_w) * c.out_h;
        double worst = 0;
        double sum = 0;
        for (size_t p = 0; p < plane; ++p) {
            for (int ch = 0; ch < 3; ++ch) {
                double d = (*got)[ch * plane + p] - want[p * 3 + ch];
                worst = std::max(worst, std::abs(d));
                sum += d;
            }
        }
        std::string name =
            std::to_string(c.box.width) + "x" + std::to_string(c.box.height) +
            " -> " + std::to_string(c.out_w) + "x" + std::to_string(c.out_h);
        EXPECT_LE(worst, kTolerance) << name;
        EXPECT_LE(std::abs(sum) / (plane * 3), kMeanTolerance) << name;
    }
}

TEST(PreprocessTest, SameSizeInputIsExactWhateverMeanAndScale) {
    // Aligned face chips already have the network's size: their values
    // must be exactly (pixel - mean) * scale.
    image chip = noise(150, 150, kSeed);
    const preprocess_spec &spec = *find_preprocess_spec("face-resnet");
    auto got = preprocess(chip, spec);
    ASSERT_TRUE(got.is_ok());
    size_t plane = 150 * 150;
    for (size_t p = 0; p < plane; ++p) {
        for (int c = 0; c < 3; ++c) {
            float want =
                (static_cast<float>(chip.rgb[p * 3 + c]) - spec.mean[c]) *
                spec.scale[c];
            ASSERT_EQ((*got)[c * plane + p], want) << p << " " << c;
        }
    }
}

TEST(PreprocessTest, RepeatedAndInterleavedSizesGiveTheSameInput) {
    // Filters are cached per thread and size pair: switching sizes and
    // coming back must not change a value.
    image a = noise(250, 250, kSeed);
    image b = noise(97, 301, kSeed + 1);
    const preprocess_spec &spec = *find_preprocess_spec("face-resnet");
    auto first_a = preprocess(a, spec);
    auto first_b = preprocess(b, spec);
    ASSERT_TRUE(first_a.is_ok() && first_b.is_ok());
    for (int i = 0; i < 20; ++i) {
        image other = noise(40 + i * 7, 30 + i * 5, kSeed + 2 + i);
        ASSERT_TRUE(preprocess(other, spec).is_ok());
    }
    auto again_a = preprocess(a, spec);
    auto again_b = preprocess(b, spec);
    ASSERT_TRUE(again_a.is_ok() && again_b.is_ok());
    EXPECT_EQ(*again_a, *first_a);
    EXPECT_EQ(*again_b, *first_b);
}

// The resize tests the filter below selects (at least).
constexpr size_t kPortableResizeTests = 6;

TEST(PreprocessTest, PortableKernelsPassTheResizeTestsToo) {
    // This machine may pick the AVX2 kernels; rerun the resize tests in a
    // child process held to the portable (SSE2) ones.
    std::string self = fs::read_symlink("/proc/self/exe");
    std::string filter =
        "PreprocessTest.ResizeMatchesItsDefinitionOnOddSizes:"
        "PreprocessTest.SameSizeInputIsExactWhateverMeanAndScale:"
        "ResizeTest.*";
    std::string cmd = "FACEVEC_SIMD=sse2 " + shell_quoted(self) +
                      " --gtest_filter=" + shell_quoted(filter) + " 2>&1";
    FILE *child = popen(cmd.c_str(), "r");
    ASSERT_NE(child, nullptr) << cmd;
    std::string out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, child)) > 0;)
        out.append(buf, n);
    EXPECT_EQ(pclose(child), 0) << cmd << "\n" << out;
    // A filter that selects nothing also exits 0: count the passes.
    size_t passed = 0;
    for (size_t at = out.find("[       OK ]"); at != std::string::npos;
         at = out.find("[       OK ]", at + 1))
        ++passed;
    EXPECT_GE(passed, kPortableResizeTests) << out;
}

// The environment variable that makes EveryKernelLevelGivesTheSameBits
// a child that only writes kernel_outputs() to the file it names.
constexpr const char *kKernelDumpEnv = "FACEVEC_TEST_KERNEL_DUMP";

// The bytes of preprocess and resize results over cases that reach every
// kernel and its edges: the AVX-512 windows (250 -> 150) and the AVX2
// groups when a window is too narrow (a 20x shrink), output widths under
// one group of 8, not a multiple of 8 and exactly 8, boxes too narrow
// for one AVX-512 vertical step (7 and 11 pixels), odd tap counts, a box
// touching the right and bottom edges, enlarging, BGR, NHWC, a scale too
// small to fold into the sums, and resize's bytes.
std::vector<uint8_t> kernel_outputs() {
    struct kernel_case {
        int width, height;  // image
        crop_box box;
        int out_w, out_h;
        channel_order order;
        tensor_layout layout;
        float scale;
    };
    constexpr float kTinyScale = 1e-35F;
    const auto rgb = channel_order::rgb;
    const auto bgr = channel_order::bgr;
    const auto nchw = tensor_layout::nchw;
    const auto nhwc = tensor_layout::nhwc;
    const kernel_case cases[] = {
        {250, 250, {0, 0, 250, 250}, 150, 150, rgb, nchw, 1.0F / 255},
        {250, 250, {0, 0, 250, 250}, 150, 150, bgr, nhwc, 1.0F},
        {640, 480, {40, 0, 600, 480}, 30, 24, bgr, nchw, 1.0F},
        {97, 61, {40, 21, 57, 40}, 19, 13, rgb, nchw, 0.5F},
        {97, 61, {90, 0, 7, 61}, 5, 7, bgr, nchw, 2.0F},
        {37, 23, {0, 0, 37, 23}, 15, 9, rgb, nchw, 1.0F},
        {37, 23, {0, 0, 37, 23}, 8, 8, bgr, nchw, 1.0F},
        {37, 23, {26, 12, 11, 11}, 9, 17, rgb, nchw, 1.0F},
        {301, 97, {0, 0, 301, 97}, 224, 224, bgr, nchw, 1.0F},
        {61, 40, {0, 0, 61, 40}, 97, 30, rgb, nchw, 1.0F},
        {250, 250, {0, 0, 250, 250}, 150, 150, rgb, nchw, kTinyScale},
    };
    std::vector<uint8_t> out;
    uint32_t seed = kSeed;
    for (const kernel_case &c : cases) {
        image img = noise(c.width, c.height, seed++);
        preprocess_spec spec = box_spec(c.box, c.out_w, c.out_h);
        spec.order = c.order;
        spec.layout = c.layout;
        spec.mean = {122.5F, 117.25F, 104.125F};
        spec.scale = {c.scale, c.scale * 2, c.scale / 2};
        auto input = preprocess(img, spec);
        EXPECT_TRUE(input.is_ok()) << input.error().to_string();
        if (!input)
            continue;
        const auto *bytes = reinterpret_cast<const uint8_t *>(input->data());
        out.insert(out.end(), bytes, bytes + input->size() * sizeof(float));
        auto resized = resize(img, c.out_w, c.out_h);
        EXPECT_TRUE(resized.is_ok()) << resized.error().to_string();
        if (resized)
            out.insert(out.end(), resized->rgb.begin(), resized->rgb.end());
    }
    return out;
}

TEST(PreprocessTest, EveryKernelLevelGivesTheSameBits) {
    if (const char *path = std::getenv(kKernelDumpEnv)) {
        write_bytes(path, kernel_outputs());
        return;
    }
    // This process uses the widest kernels the CPU has; children held to
    // SSE2, to AVX2 and left free must give the same bytes.
    std::vector<uint8_t> here = kernel_outputs();
    ASSERT_FALSE(here.empty());
    std::string self = fs::read_symlink("/proc/self/exe");
    temp_dir dir;
    for (std::string level : {"sse2", "avx2", "widest"}) {
        std::string path = dir.str(level + ".bin");
        std::string cmd =
            "FACEVEC_SIMD=" + level + " " + kKernelDumpEnv + "=" +
            shell_quoted(path) + " " + shell_quoted(self) +
            " --gtest_filter=PreprocessTest.EveryKernelLevelGivesTheSameBits"
            " 2>&1";
        FILE *child = popen(cmd.c_str(), "r");
        ASSERT_NE(child, nullptr) << cmd;
        std::string log;
        char buf[4096];
        for (size_t n; (n = std::fread(buf, 1, sizeof buf, child)) > 0;)
            log.append(buf, n);
        ASSERT_EQ(pclose(child), 0) << cmd << "\n" << log;
        std::vector<uint8_t> got = read_bytes(path);
        ASSERT_EQ(got.size(), here.size()) << level << "\n" << log;
        auto diff = std::mismatch(got.begin(), got.end(), here.begin());
        EXPECT_TRUE(diff.first == got.end())
            << level << ": first difference at byte "
            << (diff.first - got.begin());
    }
}

TEST(PreprocessTest, ResizeRoundsAsInputToImageDoes) {
    // resize() rounds its values four pixels at a time; input_to_image
    // rounds the same values of an identity spec one by one (lround).
    // Noise through uneven sizes hits values near and at .5.
    const std::pair<int, int> sizes[] = {{150, 150}, {19, 13}, {5, 7},
                                         {224, 224}, {9, 17},  {640, 3}};
    image img = noise(250, 250, kSeed);
    for (auto [w, h] : sizes) {
        preprocess_spec spec;
        spec.width = w;
        spec.height = h;
        auto input = preprocess(img, spec);
        ASSERT_TRUE(input.is_ok()) << input.error().to_string();
        auto want = input_to_image(*input, spec);
        auto got = resize(img, w, h);
        ASSERT_TRUE(want.is_ok() && got.is_ok());
        EXPECT_EQ(got->rgb, want->rgb) << w << "x" << h;
    }
}

TEST(PreprocessTest, AppliesMeanScaleAndChannelOrder) {
    image img = solid(20, 20, 10, 20, 30);
    const preprocess_spec *resnet = find_preprocess_spec("face-resnet");
    ASSERT_NE(resnet, nullptr);
    auto rgb = preprocess(img, *resnet);
    ASSERT_TRUE(rgb.is_ok()) << rgb.error().to_string();
    ASSERT_EQ(rgb->size(), 3U * 150 * 150);
    const size_t plane = 150 * 150;
    EXPECT_NEAR((*rgb)[0], (10 - 122.782F) / 255, 1e-5);
    EXPECT_NEAR((*rgb)[plane + 77], (20 - 117.001F) / 255, 1e-5);
    EXPECT_NEAR((*rgb)[2 * plane + plane - 1], (30 - 104.298F) / 255, 1e-5);

    const preprocess_spec *vgg = find_preprocess_spec("vgg16");
    ASSERT_NE(vgg, nullptr);
    auto bgr = preprocess(img, *vgg);
    ASSERT_TRUE(bgr.is_ok());
    const size_t vplane = 224 * 224;
    EXPECT_NEAR((*bgr)[5], 30 - 103.939F, 1e-4);
    EXPECT_NEAR((*bgr)[vplane + 5], 20 - 116.779F, 1e-4);
    EXPECT_NEAR((*bgr)[2 * vplane + 5], 10 - 123.68F, 1e-4);
}

TEST(PreprocessTest, NhwcInterleavesWhatNchwPlanes) {
    image img = noise(40, 30, kSeed);
    preprocess_spec spec;
    spec.width = 12;
    spec.height = 9;
    spec.order = channel_order::bgr;
    spec.mean = {1, 2, 3};
    spec.scale = {0.5F, 2, 3};
    auto planar = preprocess(img, spec);
    spec.layout = tensor_layout::nhwc;
    auto interleaved = preprocess(img, spec);
    ASSERT_TRUE(planar.is_ok() && interleaved.is_ok());
    const size_t pixels = 12 * 9;
    for (size_t p = 0; p < pixels; ++p) {
        for (size_t c = 0; c < 3; ++c) {
            EXPECT_EQ((*interleaved)[p * 3 + c], (*planar)[c * pixels + p]);
        }
    }
}

TEST(PreprocessTest, InputToImageUndoesPreprocess) {
    image img = noise(50, 40, kSeed);
    for (const char *name : {"face-resnet", "vgg16"}) {
        const preprocess_spec *spec = find_preprocess_spec(name);
        auto input = preprocess(img, *spec);
        ASSERT_TRUE(input.is_ok());
        auto picture = input_to_image(*input, *spec);
        ASSERT_TRUE(picture.is_ok());
        auto resized = resize(img, spec->width, spec->height);
        ASSERT_TRUE(resized.is_ok());
        EXPECT_LE(max_abs_diff(*picture, *resized), 1) << name;
    }
}

TEST(PreprocessTest, CenterCropIsTheCentredSquare) {
    crop_box b = center_crop_box(250, 200, 0.5F);
    EXPECT_EQ(b.width, 100);
    EXPECT_EQ(b.height, 100);
    EXPECT_EQ(b.x, 75);
    EXPECT_EQ(b.y, 50);

    image img = noise(250, 200, kSeed);
    preprocess_spec centred;
    centred.width = centred.height = 64;
    centred.crop = crop_mode::center_fraction;
    centred.crop_fraction = 0.5F;
    preprocess_spec boxed = centred;
    boxed.crop = crop_mode::box;
    boxed.box = b;
    auto a = preprocess(img, centred);
    auto c = preprocess(img, boxed);
    ASSERT_TRUE(a.is_ok() && c.is_ok());
    EXPECT_EQ(*a, *c);
}

TEST(PreprocessTest, DecodeMinSideKeepsEnoughPixelsForTheCrop) {
    preprocess_spec spec = *find_preprocess_spec("face-resnet");
    EXPECT_EQ(decode_min_side(spec), 150);
    spec.crop = crop_mode::center_fraction;
    spec.crop_fraction = 0.5F;
    EXPECT_EQ(decode_min_side(spec), 300);
    spec.crop = crop_mode::box;
    EXPECT_EQ(decode_min_side(spec), 0);
}

TEST(PreprocessTest, BadSpecsAndInputsAreInvalidArguments) {
    image img = noise(20, 20, kSeed);
    auto expect_invalid = [](const status &st, const std::string &fragment) {
        EXPECT_EQ(st.code(), error_code::invalid_argument) << st.to_string();
        EXPECT_NE(st.message().find(fragment), std::string::npos)
            << st.message();
    };
    preprocess_spec spec = *find_preprocess_spec("face-resnet");

    preprocess_spec empty = spec;
    empty.width = 0;
    expect_invalid(preprocess(img, empty).error(),
                   "preprocess spec: input size 0x150 is not in 1..4096");
    preprocess_spec fraction = spec;
    fraction.crop = crop_mode::center_fraction;
    fraction.crop_fraction = 0.0F;
    expect_invalid(preprocess(img, fraction).error(), "crop_fraction");
    preprocess_spec zero_scale = spec;
    zero_scale.scale[1] = 0.0F;
    expect_invalid(preprocess(img, zero_scale).error(), "scale 0");
    preprocess_spec outside = spec;
    outside.crop = crop_mode::box;
    outside.box = {10, 10, 20, 5};
    expect_invalid(preprocess(img, outside).error(),
                   "crop box 20x5 at (10, 10) is not inside the image of "
                   "20x20");

    std::vector<float> small(10);
    expect_invalid(preprocess_into(img, spec, small),
                   "output holds 10 floats, 67500 needed");
    expect_invalid(preprocess(solid(7, 100, 1, 2, 3), spec).error(),
                   "image of 7x100 pixels is too small");
    expect_invalid(preprocess(image{}, spec).error(), "empty or inconsistent");
    expect_invalid(resize(img, 0, 5).error(), "target 0x5");
    expect_invalid(crop(img, {0, 0, 0, 3}).error(), "crop box 0x3");
    expect_invalid(input_to_image(small, spec).error(),
                   "network input holds 10 floats, 67500 expected");
}

TEST(PreprocessTest, BuiltInSpecsAreFoundByName) {
    EXPECT_EQ(preprocess_spec_names(),
              (std::vector<std::string>{"face-resnet", "vgg16"}));
    const preprocess_spec *resnet = find_preprocess_spec("face-resnet");
    ASSERT_NE(resnet, nullptr);
    EXPECT_EQ(resnet->width, 150);
    EXPECT_EQ(resnet->order, channel_order::rgb);
    EXPECT_FLOAT_EQ(resnet->scale[0], 1.0F / 255);
    const preprocess_spec *vgg = find_preprocess_spec("vgg16");
    ASSERT_NE(vgg, nullptr);
    EXPECT_EQ(vgg->height, 224);
    EXPECT_EQ(vgg->order, channel_order::bgr);
    EXPECT_EQ(find_preprocess_spec("no-such-model"), nullptr);

    // What `facevec decode --model` shows is what the embedders see.
    for (const auto &[name, model] :
         {std::pair{"face-resnet", face_resnet_preprocess()},
          std::pair{"vgg16", vgg16_preprocess(224)}}) {
        const preprocess_spec *spec = find_preprocess_spec(name);
        ASSERT_NE(spec, nullptr) << name;
        EXPECT_EQ(spec->width, model.width) << name;
        EXPECT_EQ(spec->height, model.height) << name;
        EXPECT_EQ(spec->order, model.order) << name;
        EXPECT_EQ(spec->crop, model.crop) << name;
        for (int c = 0; c < 3; ++c) {
            EXPECT_FLOAT_EQ(spec->mean[c], model.mean[c]) << name;
            EXPECT_FLOAT_EQ(spec->scale[c], model.scale[c]) << name;
        }
    }
}

// ---------------------------------------------------------------------
// The CLI: facevec decode.

struct cli_run {
    int exit_code;
    std::string err;
};

cli_run run_cli(const std::string &args, const temp_dir &dir) {
    std::string err_path = dir.str("stderr.txt");
    std::string cmd = shell_quoted(testing::facevec_bin()) + " " + args +
                      " 2>" + shell_quoted(err_path);
    int rc = std::system(cmd.c_str());
    std::vector<uint8_t> err = read_bytes(err_path);
    return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1,
            std::string(err.begin(), err.end())};
}

TEST(DecodeCommandTest, WritesTheUprightImageAsPng) {
    temp_dir dir;
    std::string out = dir.str("упр 😀.png");
    cli_run r = run_cli("decode " + shell_quoted(fixture("exif6.jpg")) +
                            " --out " + shell_quoted(out),
                        dir);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto written = decode_file(out);
    ASSERT_TRUE(written.is_ok()) << written.error().to_string();
    EXPECT_EQ(written->rgb, read_ref(fixture("exif6.jpg.ref")).rgb);
}

TEST(DecodeCommandTest, WithModelWritesTheNetworkInput) {
    temp_dir dir;
    std::string source = dir.str("visage é.jpg");
    fs::copy_file(fixture("exif3.jpg"), source);
    cli_run r = run_cli("decode " + shell_quoted(source) +
                            " --model face-resnet --out " +
                            shell_quoted(dir.str("in.png")),
                        dir);
    ASSERT_EQ(r.exit_code, 0) << r.err;

    const preprocess_spec *spec = find_preprocess_spec("face-resnet");
    decode_options opts;
    opts.min_side = decode_min_side(*spec);
    auto img = decode_file(source, opts);
    ASSERT_TRUE(img.is_ok());
    auto input = preprocess(*img, *spec);
    ASSERT_TRUE(input.is_ok());
    auto want = input_to_image(*input, *spec);
    ASSERT_TRUE(want.is_ok());
    auto written = decode_file(dir.str("in.png"));
    ASSERT_TRUE(written.is_ok());
    EXPECT_EQ(written->width, 150);
    EXPECT_EQ(written->height, 150);
    EXPECT_EQ(written->rgb, want->rgb);
}

TEST(DecodeCommandTest, BadInputExitsWithOneLine) {
    temp_dir dir;
    std::string bad = dir.str("сломан.jpg");
    std::vector<uint8_t> bytes = read_bytes(fixture("baseline.jpg"));
    bytes.resize(bytes.size() / 2);
    write_bytes(bad, bytes);
    cli_run r = run_cli("decode " + shell_quoted(bad) + " --out " +
                            shell_quoted(dir.str("o.png")),
                        dir);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.err, "facevec: " + bad + ": Premature end of JPEG file\n");
    EXPECT_FALSE(fs::exists(dir.str("o.png")));

    r = run_cli("decode " + shell_quoted(dir.str("none.png")) + " --out " +
                    shell_quoted(dir.str("o.png")),
                dir);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.err, "facevec: " + dir.str("none.png") + ": no such file\n");
}

TEST(DecodeCommandTest, UnknownModelIsOneLineError) {
    temp_dir dir;
    cli_run r =
        run_cli("decode " + shell_quoted(fixture("baseline.jpg")) +
                    " --model nope --out " + shell_quoted(dir.str("o.png")),
                dir);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.err,
              "facevec: nope: unknown model (known: face-resnet, vgg16)\n");
}

// ---------------------------------------------------------------------
// Real photographs: LFW, against Pillow.

TEST(LfwTest, SampleImagesMatchPillow) {
    std::string faces = testing::faces_dir();
    if (faces.empty())
        GTEST_SKIP() << "LFW not found (set FACEVEC_FACES)";
    std::vector<std::string> files;
    for (const auto &e : fs::recursive_directory_iterator(faces + "/lfw")) {
        if (e.path().extension() == ".jpg")
            files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    constexpr size_t kSamples = 24;
    ASSERT_GE(files.size(), kSamples);
    std::vector<std::string> sample;
    for (size_t i = 0; i < kSamples; ++i) {
        sample.push_back(files[i * (files.size() / kSamples)]);
    }

    temp_dir dir;
    std::string script =
        "import sys, numpy as np\nfrom PIL import Image\n"
        "for i, p in enumerate(sys.argv[2:]):\n"
        "    a = np.asarray(Image.open(p).convert('RGB'))\n"
        "    open('%s/%d.ref' % (sys.argv[1], i), 'wb').write(\n"
        "        b'%d %d\\n' % (a.shape[1], a.shape[0]) + a.tobytes())\n";
    write_bytes(dir.str("ref.py"), {script.begin(), script.end()});
    std::string cmd = python() + " " + shell_quoted(dir.str("ref.py")) + " " +
                      shell_quoted(dir.str());
    for (const auto &s : sample)
        cmd.append(" ").append(shell_quoted(s));
    ASSERT_EQ(std::system(cmd.c_str()), 0);

    for (size_t i = 0; i < sample.size(); ++i) {
        auto got = decode_file(sample[i]);
        ASSERT_TRUE(got.is_ok()) << got.error().to_string();
        image want = read_ref(dir.str(std::to_string(i) + ".ref"));
        expect_same_size(*got, want);
        EXPECT_EQ(got->rgb, want.rgb) << sample[i];
    }
}

// A caller's pixel cap is applied from the header: a header-only PPM of
// 5000 x 5000 is refused for its size, not reported as truncated.
TEST(ImageLimitTest, CallerPixelCapRefusesFromTheHeader) {
    const std::string header = "P6\n5000 5000\n255\n";
    std::vector<uint8_t> bytes(header.begin(), header.end());

    auto uncapped = decode_bytes(bytes, "big.ppm");
    ASSERT_FALSE(uncapped.is_ok());
    EXPECT_NE(uncapped.error().code(), error_code::resource_exhausted);

    decode_options opts;
    opts.max_pixels = 10000;
    auto capped = decode_bytes(bytes, "big.ppm", opts);
    ASSERT_FALSE(capped.is_ok());
    EXPECT_EQ(capped.error().code(), error_code::resource_exhausted);
    EXPECT_EQ(capped.error().message(),
              "big.ppm: 5000 x 5000 = 25000000 pixels, the limit is 10000");
}

}  // namespace
}  // namespace facevec::embed
