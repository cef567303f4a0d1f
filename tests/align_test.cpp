// Face alignment: detection, landmarks and chips on LFW faces moved,
// scaled, rotated, mirrored, EXIF-rotated and paired, against the same
// face aligned as it is; bad inputs and faceless images.
#include "embed/align.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <numbers>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "embed/embedder.h"
#include "embed/models.h"
#include "tests/test_util.h"

namespace facevec::embed {
namespace {

using facevec::testing::faces_dir;
using facevec::testing::temp_dir;

constexpr int kChannels = 3;
constexpr uint8_t kCanvasGray = 128;

// Landmarks of a moved, scaled or rotated face, mapped back to the
// original photo, stay this close to the original's landmarks: mean over
// the 68 points, in px of the 250 px LFW photo (dlib's points are whole
// pixels; the eyes are about 45 px apart). Seen: at most 0.97.
constexpr double kMaxMeanLandmarkError = 1.5;
// ... and their chips differ by at most this mean absolute value (0..255)
// per channel. Seen: at most 3.4.
constexpr double kMaxMeanChipDifference = 5.0;
// The chip of a mirrored photo against the mirrored chip: the landmark
// model is not exactly symmetric, so the chips shift by a pixel or so.
// Seen: at most 7.1. Chips of two different people differ by more.
constexpr double kMaxMirroredChipDifference = 10.0;

// The face ResNet's embeddings (128-D, not normalised; dlib's
// same-person threshold is an L2 distance of 0.6) of a moved, scaled or
// rotated photo and of the original stay this close. Seen: at most
// 0.10.
constexpr double kMaxEmbeddingDistance = 0.18;

// Three LFW photos the detector finds at 1x.
const char *const kPhotos[] = {
    "George_W_Bush/George_W_Bush_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
    "Tony_Blair/Tony_Blair_0001.jpg",
};

std::string lfw(const std::string &rel) {
    return faces_dir() + "/lfw/" + rel;
}

#define SKIP_WITHOUT_LFW()                                             \
    do {                                                               \
        if (faces_dir().empty()) {                                     \
            GTEST_SKIP() << "LFW not found (set FACEVEC_FACES or put " \
                            "it at ../shared/faces)";                  \
        }                                                              \
    } while (0)

const aligner &shared_aligner() {
    static const aligner kShared = [] {
        result<aligner> r = aligner::create();
        EXPECT_TRUE(r.is_ok()) << r.error().to_string();
        return std::move(r).value();
    }();
    return kShared;
}

image load(const std::string &rel) {
    result<image> img = decode_file(lfw(rel));
    EXPECT_TRUE(img.is_ok()) << img.error().to_string();
    return img.is_ok() ? std::move(img).value() : image{};
}

image blank(int width, int height, uint8_t value) {
    image img;
    img.width = width;
    img.height = height;
    img.rgb.assign(static_cast<size_t>(width) * height * kChannels, value);
    return img;
}

// A similarity transform (optionally mirrored): p' = s R(a) M p + t.
struct transform {
    double scale = 1;
    double degrees = 0;
    double tx = 0;
    double ty = 0;
    bool mirror = false;

    point2 forward(point2 p) const {
        const double x = mirror ? -p.x : p.x;
        const double a = degrees * std::numbers::pi / 180;
        return {scale * (std::cos(a) * x - std::sin(a) * p.y) + tx,
                scale * (std::sin(a) * x + std::cos(a) * p.y) + ty};
    }
    point2 inverse(point2 q) const {
        const double a = degrees * std::numbers::pi / 180;
        const double x = (q.x - tx) / scale;
        const double y = (q.y - ty) / scale;
        const double px = std::cos(a) * x + std::sin(a) * y;
        const double py = -std::sin(a) * x + std::cos(a) * y;
        return {mirror ? -px : px, py};
    }
};

// `src` drawn on a gray width x height canvas through `t` (bilinear;
// pixel centres at integer coordinates).
image warp(const image &src, const transform &t, int width, int height) {
    image out = blank(width, height, kCanvasGray);
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            const point2 p = t.inverse({double(x), double(y)});
            const int x0 = static_cast<int>(std::floor(p.x));
            const int y0 = static_cast<int>(std::floor(p.y));
            if (x0 < 0 || y0 < 0 || x0 + 1 >= src.width ||
                y0 + 1 >= src.height) {
                continue;
            }
            const double fx = p.x - x0;
            const double fy = p.y - y0;
            for (int c = 0; c < kChannels; ++c) {
                auto at = [&](int xx, int yy) {
                    return double(
                        src.rgb[(size_t(yy) * src.width + xx) * kChannels + c]);
                };
                const double v =
                    (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) +
                    fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
                out.rgb[(size_t(y) * width + x) * kChannels + c] =
                    static_cast<uint8_t>(std::lround(v));
            }
        }
    }
    return out;
}

// `src` copied into `dst` with its top-left corner at (x, y).
void paste(const image &src, image &dst, int x, int y) {
    for (int r = 0; r < src.height; ++r) {
        std::copy_n(&src.rgb[size_t(r) * src.width * kChannels],
                    src.width * kChannels,
                    &dst.rgb[(size_t(y + r) * dst.width + x) * kChannels]);
    }
}

image mirrored(const image &src) {
    return warp(src, {.tx = double(src.width - 1), .mirror = true}, src.width,
                src.height);
}

double mean_abs_difference(const image &a, const image &b) {
    EXPECT_EQ(a.rgb.size(), b.rgb.size());
    double sum = 0;
    for (size_t i = 0; i < a.rgb.size() && i < b.rgb.size(); ++i) {
        sum += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    }
    return sum / std::max<size_t>(a.rgb.size(), 1);
}

// Mean distance between landmarks `moved` (mapped back through `t`) and
// `original`.
double mean_landmark_error(const std::vector<point2> &original,
                           const std::vector<point2> &moved,
                           const transform &t) {
    EXPECT_EQ(original.size(), moved.size());
    double sum = 0;
    for (size_t i = 0; i < original.size() && i < moved.size(); ++i) {
        const point2 back = t.inverse(moved[i]);
        sum += std::hypot(back.x - original[i].x, back.y - original[i].y);
    }
    return sum / std::max<size_t>(original.size(), 1);
}

// Options differing from the defaults in one field.
align_options with_spec(align_spec spec) {
    align_options o;
    o.spec = spec;
    return o;
}
align_options with_choice(face_choice choice) {
    align_options o;
    o.choice = choice;
    return o;
}
align_options with_mode(align_mode mode, align_spec spec = {}) {
    align_options o;
    o.mode = mode;
    o.spec = spec;
    return o;
}

aligned_face align_one(const image &img, const std::string &name,
                       const align_options &opts = {}) {
    result<alignment> r = shared_aligner().align(img, name, opts);
    EXPECT_TRUE(r.is_ok()) << r.error().to_string();
    if (!r.is_ok() || r->faces.empty()) {
        return {};
    }
    return std::move(r->faces.front());
}

TEST(AlignTest, LfwPhotoGivesOneChipOfTheSpecSizeWith68Landmarks) {
    SKIP_WITHOUT_LFW();
    const image img = load(kPhotos[0]);
    for (const align_spec spec :
         {align_spec::face_resnet(), align_spec::vgg16()}) {
        result<alignment> r =
            shared_aligner().align(img, kPhotos[0], with_spec(spec));
        ASSERT_TRUE(r.is_ok()) << r.error().to_string();
        ASSERT_EQ(r->faces.size(), 1U);
        EXPECT_EQ(r->faces_found, 1);
        EXPECT_FALSE(r->fallback);
        const aligned_face &f = r->faces[0];
        EXPECT_EQ(f.chip.width, spec.size);
        EXPECT_EQ(f.chip.height, spec.size);
        EXPECT_EQ(f.chip.rgb.size(), size_t(spec.size) * spec.size * 3);
        EXPECT_EQ(f.landmarks.size(), 68U);
        EXPECT_GT(f.score, 0);
        // LFW photos are centred on the face.
        EXPECT_LT(f.box.left, 125);
        EXPECT_GT(f.box.right, 125);
        EXPECT_LT(f.box.top, 125);
        EXPECT_GT(f.box.bottom, 125);
    }
}

TEST(AlignTest, MovedScaledAndRotatedFaceGivesTheSameLandmarksAndChip) {
    SKIP_WITHOUT_LFW();
    const transform cases[] = {
        {.tx = 130, .ty = 40},                 // shifted in a canvas
        {.scale = 1.6, .tx = 60, .ty = 20},    // larger
        {.scale = 0.85, .tx = 150, .ty = 90},  // smaller
        {.degrees = 6, .tx = 140, .ty = 60},   // rotated clockwise
        {.degrees = -6, .tx = 120, .ty = 90},  // rotated anticlockwise
    };
    for (const char *photo : kPhotos) {
        const image img = load(photo);
        const aligned_face original = align_one(img, photo);
        for (const transform &t : cases) {
            SCOPED_TRACE(std::string(photo) + " scale " +
                         std::to_string(t.scale) + " degrees " +
                         std::to_string(t.degrees));
            const image moved = warp(img, t, 560, 480);
            const aligned_face f = align_one(moved, "moved");
            EXPECT_LT(mean_landmark_error(original.landmarks, f.landmarks, t),
                      kMaxMeanLandmarkError);
            EXPECT_LT(mean_abs_difference(original.chip, f.chip),
                      kMaxMeanChipDifference);
        }
    }
}

double l2_distance(const std::vector<float> &a, const std::vector<float> &b) {
    EXPECT_EQ(a.size(), b.size());
    double sum = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
        sum += (a[i] - b[i]) * (a[i] - b[i]);
    }
    return std::sqrt(sum);
}

TEST(AlignTest, MovedFaceGivesNearlyTheSameEmbedding) {
    SKIP_WITHOUT_LFW();
    // The aligner as the embedder's stage: photos in, embeddings out.
    embedder_options eo;
    eo.align = "auto";
    eo.stage = make_align_stage(
        std::make_shared<aligner>(std::move(aligner::create()).value()));
    result<std::unique_ptr<embedder>> e = embedder::load(kFaceResnet, eo);
    if (!e.is_ok()) {
        GTEST_SKIP() << "face-resnet not available: " << e.error().to_string();
    }
    const transform cases[] = {
        {.tx = 130, .ty = 40},
        {.scale = 1.6, .tx = 60, .ty = 20},
        {.degrees = 6, .tx = 140, .ty = 60},
    };
    std::vector<std::vector<float>> originals;
    for (const char *photo : kPhotos) {
        const image img = load(photo);
        result<std::vector<float>> original = (*e)->embed_one(img, photo);
        ASSERT_TRUE(original.is_ok()) << original.error().to_string();
        for (const transform &t : cases) {
            SCOPED_TRACE(std::string(photo) + " scale " +
                         std::to_string(t.scale) + " degrees " +
                         std::to_string(t.degrees));
            result<std::vector<float>> moved =
                (*e)->embed_one(warp(img, t, 560, 480), "moved");
            ASSERT_TRUE(moved.is_ok()) << moved.error().to_string();
            EXPECT_LT(l2_distance(original.value(), moved.value()),
                      kMaxEmbeddingDistance);
        }
        originals.push_back(std::move(original).value());
    }
    // The bound tells these people apart.
    EXPECT_GT(l2_distance(originals[0], originals[1]), kMaxEmbeddingDistance);
    EXPECT_GT(l2_distance(originals[1], originals[2]), kMaxEmbeddingDistance);

    // A photo without a face fails the embedding with the aligner's error.
    result<std::vector<float>> none =
        (*e)->embed_one(blank(250, 250, 255), "white.png");
    ASSERT_FALSE(none.is_ok());
    EXPECT_EQ(none.error().code(), error_code::not_found);
    EXPECT_NE(none.error().message().find("white.png: no face found"),
              std::string::npos);
}

TEST(AlignTest, MirroredFaceGivesTheMirroredChip) {
    SKIP_WITHOUT_LFW();
    for (const char *photo : kPhotos) {
        SCOPED_TRACE(photo);
        const image img = load(photo);
        const aligned_face original = align_one(img, photo);
        const aligned_face flipped = align_one(mirrored(img), "mirrored");
        EXPECT_LT(mean_abs_difference(mirrored(original.chip), flipped.chip),
                  kMaxMirroredChipDifference);
    }

    // The bound tells people apart.
    const aligned_face a = align_one(load(kPhotos[0]), kPhotos[0]);
    const aligned_face b = align_one(load(kPhotos[1]), kPhotos[1]);
    EXPECT_GT(mean_abs_difference(a.chip, b.chip), kMaxMirroredChipDifference);
}

TEST(AlignTest, LargePhotoIsDetectedShrunkAndCutAtFullResolution) {
    SKIP_WITHOUT_LFW();
    const image img = load(kPhotos[1]);
    const transform t{.scale = 3, .tx = 1100, .ty = 150};
    const image photo = warp(img, t, 1920, 1080);
    const aligned_face original = align_one(img, kPhotos[1]);
    const aligned_face f = align_one(photo, "1920x1080");

    // Landmarks of the 3x face, mapped back, within 3x the bound of 1x
    // divided by the scale: the same bound in original pixels.
    EXPECT_LT(mean_landmark_error(original.landmarks, f.landmarks, t),
              kMaxMeanLandmarkError);
    EXPECT_LT(mean_abs_difference(original.chip, f.chip),
              kMaxMeanChipDifference);
    EXPECT_GT(f.box.left, 1100);
    EXPECT_LT(f.box.right, 1100 + 3 * 250);
}

TEST(AlignTest, ExifRotatedPhotoAlignsLikeItsUprightTwin) {
    SKIP_WITHOUT_LFW();
    temp_dir dir;
    const std::string script = dir.str("make.py");
    std::ofstream(script)
        << "import sys\n"
           "from PIL import Image\n"
           "src, up, rot = sys.argv[1:4]\n"
           "img = Image.open(src).convert('RGB')\n"
           "img.save(up, quality=95)\n"
           "exif = Image.Exif()\n"
           "exif[0x0112] = 6\n"  // display: rotate 90 degrees clockwise
           "img.transpose(Image.Transpose.ROTATE_90).save(\n"
           "    rot, quality=95, exif=exif.tobytes())\n";
    const std::string command = "/usr/bin/python3 " + script + " " +
                                lfw(kPhotos[2]) + " " + dir.str("up.jpg") +
                                " " + dir.str("rot.jpg") + " 2>&1";
    if (std::system(command.c_str()) != 0) {
        GTEST_SKIP() << "python3-pil is needed to write the EXIF photo";
    }

    result<alignment> up = shared_aligner().align_file(dir.str("up.jpg"));
    result<alignment> rot = shared_aligner().align_file(dir.str("rot.jpg"));
    ASSERT_TRUE(up.is_ok()) << up.error().to_string();
    ASSERT_TRUE(rot.is_ok()) << rot.error().to_string();
    EXPECT_LT(mean_landmark_error(up->faces[0].landmarks,
                                  rot->faces[0].landmarks, {}),
              kMaxMeanLandmarkError);
    EXPECT_LT(mean_abs_difference(up->faces[0].chip, rot->faces[0].chip),
              kMaxMeanChipDifference);
}

TEST(AlignTest, NoiseAndBlankImagesHaveNoFace) {
    std::mt19937 rng(7);
    image noise = blank(320, 240, 0);
    for (uint8_t &v : noise.rgb) {
        v = static_cast<uint8_t>(rng());
    }
    for (const auto &[img, name] :
         {std::pair{noise, std::string("noise.png")},
          std::pair{blank(250, 250, 255), std::string("white.png")}}) {
        result<alignment> r = shared_aligner().align(img, name);
        ASSERT_FALSE(r.is_ok());
        EXPECT_EQ(r.error().code(), error_code::not_found);
        EXPECT_EQ(r.error().message(), name + ": no face found");
    }
}

TEST(AlignTest, FallbackGivesACentreCropAndSaysSo) {
    const image white = blank(250, 250, 255);
    align_options opts;
    opts.center_fallback = true;
    result<alignment> r = shared_aligner().align(white, "white.png", opts);
    ASSERT_TRUE(r.is_ok()) << r.error().to_string();
    EXPECT_TRUE(r->fallback);
    EXPECT_EQ(r->faces_found, 0);
    ASSERT_EQ(r->faces.size(), 1U);
    EXPECT_EQ(r->faces[0].chip.width, 150);
    EXPECT_TRUE(r->faces[0].landmarks.empty());
}

TEST(AlignTest, TwoFacesSideBySideGiveTwoBoxesEachInItsHalf) {
    SKIP_WITHOUT_LFW();
    image pair = blank(500, 250, kCanvasGray);
    paste(load(kPhotos[0]), pair, 0, 0);
    paste(load(kPhotos[1]), pair, 250, 0);

    result<alignment> r =
        shared_aligner().align(pair, "pair", with_choice(face_choice::all));
    ASSERT_TRUE(r.is_ok()) << r.error().to_string();
    ASSERT_EQ(r->faces_found, 2);
    ASSERT_EQ(r->faces.size(), 2U);
    int left = 0;
    int right = 0;
    for (const aligned_face &f : r->faces) {
        EXPECT_EQ(f.chip.width, 150);
        left += f.box.left >= 0 && f.box.right <= 250;
        right += f.box.left >= 250 && f.box.right <= 500;
    }
    EXPECT_EQ(left, 1);
    EXPECT_EQ(right, 1);
}

TEST(AlignTest, CentralChoiceIgnoresALargerFaceOffCentre) {
    SKIP_WITHOUT_LFW();
    // The subject (1x) in the middle, a larger face (1.4x) at the edge.
    image photo = blank(900, 400, kCanvasGray);
    paste(load(kPhotos[0]), photo, 325, 75);
    const transform big{.scale = 1.4, .tx = 0, .ty = 25};
    const image side = warp(load(kPhotos[1]), big, 350, 350);
    paste(side, photo, 550, 25);

    const aligned_face central =
        align_one(photo, "group", with_choice(face_choice::central));
    const aligned_face largest =
        align_one(photo, "group", with_choice(face_choice::largest));
    EXPECT_LT(central.box.left, 450);
    EXPECT_GT(central.box.right, 450);
    EXPECT_GT(largest.box.left, 550);
}

TEST(AlignTest, ChooseCentralFacePrefersTheLargestBoxCoveringTheCentre) {
    // A small face whose centre is nearest to the image centre, and the
    // subject whose larger box covers the centre.
    const std::vector<face_box> boxes = {
        {180, 180, 230, 230},  // small, centre nearest to (200, 200)
        {60, 40, 210, 190},    // large, ends short of the centre
        {120, 100, 280, 260},  // the subject: covers (200, 200)
    };
    EXPECT_EQ(choose_central_face(boxes, 400, 400), 2);
    EXPECT_EQ(choose_central_face({}, 400, 400), -1);

    // None covers the centre: nearest relative to size, so a large face
    // 20 px away beats a small one 15 px away.
    const std::vector<face_box> apart = {
        {215, 215, 255, 255},  // 40 px box, 15 px away on each axis
        {20, 20, 180, 180},    // 160 px box, 20 px away on each axis
    };
    EXPECT_EQ(choose_central_face(apart, 400, 400), 1);
}

TEST(AlignTest, ModeNoneKeepsAChipOfTheRightSizeAsItIs) {
    std::mt19937 rng(3);
    image chip = blank(150, 150, 0);
    for (uint8_t &v : chip.rgb) {
        v = static_cast<uint8_t>(rng());
    }
    result<alignment> r =
        shared_aligner().align(chip, "chip.png", with_mode(align_mode::none));
    ASSERT_TRUE(r.is_ok()) << r.error().to_string();
    EXPECT_EQ(r->faces[0].chip.rgb, chip.rgb);

    result<alignment> big = shared_aligner().align(
        blank(300, 200, 9), "big.png",
        with_mode(align_mode::none, align_spec::vgg16()));
    ASSERT_TRUE(big.is_ok()) << big.error().to_string();
    EXPECT_EQ(big->faces[0].chip.width, 224);
    EXPECT_EQ(big->faces[0].chip.height, 224);
    EXPECT_EQ(big->faces[0].chip.rgb[0], 9);
}

TEST(AlignTest, ModeCenterCutsTheCentreSquare) {
    // Left half black, right half white: the central 48% square keeps
    // both halves, split in the middle of the chip.
    image img = blank(250, 250, 0);
    for (int y = 0; y < 250; ++y) {
        std::fill_n(&img.rgb[(size_t(y) * 250 + 125) * 3], 125 * 3, 255);
    }
    result<alignment> r =
        shared_aligner().align(img, "halves", with_mode(align_mode::center));
    ASSERT_TRUE(r.is_ok()) << r.error().to_string();
    const image &c = r->faces[0].chip;
    ASSERT_EQ(c.width, 150);
    EXPECT_EQ(c.rgb[(75 * 150 + 10) * 3], 0);
    EXPECT_EQ(c.rgb[(75 * 150 + 140) * 3], 255);
    EXPECT_EQ(r->faces_found, 0);
}

TEST(AlignTest, ConcurrentCallsGiveTheSameResultsAsSerialOnes) {
    SKIP_WITHOUT_LFW();
    std::vector<image> photos;
    std::vector<aligned_face> serial;
    for (const char *p : kPhotos) {
        photos.push_back(load(p));
        serial.push_back(align_one(photos.back(), p));
    }
    constexpr int kThreads = 4;
    constexpr int kRounds = 3;
    std::vector<int> mismatches(kThreads, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int round = 0; round < kRounds; ++round) {
                for (size_t i = 0; i < photos.size(); ++i) {
                    result<alignment> r =
                        shared_aligner().align(photos[i], kPhotos[i]);
                    mismatches[t] += !r.is_ok() ||
                                     r->faces[0].chip.rgb != serial[i].chip.rgb;
                }
            }
        });
    }
    for (std::thread &th : threads) {
        th.join();
    }
    for (int t = 0; t < kThreads; ++t) {
        EXPECT_EQ(mismatches[t], 0) << "thread " << t;
    }
}

TEST(AlignTest, BadInputsAreRefusedWithTheirReason) {
    const image ok = blank(100, 100, 0);
    image broken = ok;
    broken.rgb.pop_back();
    align_options zero_size = with_spec({0, 0.25});
    align_options huge_size = with_spec({5000, 0.25});
    align_options negative_padding = with_spec({150, -0.1});
    align_options nan_padding = with_spec({150, NAN});
    align_options zero_fraction;
    zero_fraction.center_fraction = 0;
    align_options tiny_detect;
    tiny_detect.detect_max_side = 40;
    const struct {
        image img;
        align_options opts;
        std::string says;
    } cases[] = {
        {image{}, {}, "x: image is empty"},
        {broken, {}, "does not match 100 x 100"},
        {ok, zero_size, "chip size 0 is outside [1, 4096]"},
        {ok, huge_size, "chip size 5000"},
        {ok, negative_padding, "padding -0.1"},
        {ok, nan_padding, "padding nan"},
        {ok, zero_fraction, "center fraction 0"},
        {ok, tiny_detect, "detect_max_side 40"},
    };
    for (const auto &c : cases) {
        result<alignment> r = shared_aligner().align(c.img, "x", c.opts);
        ASSERT_FALSE(r.is_ok()) << c.says;
        EXPECT_EQ(r.error().code(), error_code::invalid_argument);
        EXPECT_NE(r.error().message().find(c.says), std::string::npos)
            << r.error().message();
    }
}

TEST(AlignTest, MissingOrForeignLandmarkModelIsRefused) {
    temp_dir dir;
    result<aligner> missing = aligner::create(dir.str("none.dat"));
    ASSERT_FALSE(missing.is_ok());
    EXPECT_EQ(missing.error().code(), error_code::not_found);
    EXPECT_NE(missing.error().message().find("none.dat"), std::string::npos);

    std::ofstream(dir.str("junk.dat")) << "not a shape predictor";
    result<aligner> junk = aligner::create(dir.str("junk.dat"));
    ASSERT_FALSE(junk.is_ok());
    EXPECT_EQ(junk.error().code(), error_code::corruption);
    EXPECT_NE(junk.error().message().find("junk.dat: not a dlib shape"),
              std::string::npos);
}

TEST(AlignTest, MissingFileIsReportedByName) {
    result<alignment> r = shared_aligner().align_file("/nonexistent/a.jpg");
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::not_found);
    EXPECT_NE(r.error().message().find("/nonexistent/a.jpg"),
              std::string::npos);
}

TEST(AlignTest, ParseAlignModeNamesTheBadValue) {
    EXPECT_EQ(parse_align_mode("auto").value(), align_mode::detect);
    EXPECT_EQ(parse_align_mode("none").value(), align_mode::none);
    EXPECT_EQ(parse_align_mode("center").value(), align_mode::center);
    result<align_mode> bad = parse_align_mode("sideways");
    ASSERT_FALSE(bad.is_ok());
    EXPECT_EQ(bad.error().code(), error_code::invalid_argument);
    EXPECT_NE(bad.error().message().find("'sideways'"), std::string::npos);
    for (align_mode m :
         {align_mode::detect, align_mode::none, align_mode::center}) {
        EXPECT_EQ(parse_align_mode(align_mode_name(m)).value(), m);
    }
}

}  // namespace
}  // namespace facevec::embed
