// Face alignment with dlib: HOG detection, 68 landmarks, face chips.
//
// facevec images are handed to dlib without copies: the two view types
// below implement dlib's generic image interface over an image's own
// pixel buffer (dlib's rgb_pixel is three bytes, red first, exactly our
// interleaved layout).
#include "embed/align.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <limits>
#include <mutex>
#include <utility>

#include <dlib/image_processing.h>
#include <dlib/image_processing/frontal_face_detector.h>
#include <dlib/image_transforms.h>

#include "common/log.h"
#include "embed/preprocess.h"

namespace facevec::embed {
namespace {

static_assert(sizeof(dlib::rgb_pixel) == 3, "rgb_pixel must be 3 bytes");

constexpr int kChannels = 3;
constexpr int kMaxChipSide = 4096;
constexpr double kMaxPadding = 4.0;
constexpr int kLandmarkCount = 68;
// dlib's frontal detector scans an 80 x 80 px window; smaller faces are
// found only in an upsampled copy.
constexpr int kDetectorWindow = 80;
// The second detection pass runs at this factor times the first's
// resolution, when the cap still allows kMinRetryGain of it.
constexpr double kRetryFactor = 2.0;
constexpr double kMinRetryGain = 1.25;

// A read-only dlib view of an image's pixels.
struct const_rgb_view {
    const image *img;
};

long num_rows(const const_rgb_view &v) {
    return v.img->height;
}
long num_columns(const const_rgb_view &v) {
    return v.img->width;
}
long width_step(const const_rgb_view &v) {
    return static_cast<long>(v.img->width) * kChannels;
}
const void *image_data(const const_rgb_view &v) {
    return v.img->rgb.data();
}

// A writable image dlib sizes through set_image_size. It owns its image
// (dlib default-constructs and swaps outputs), which moves out without a
// copy.
struct rgb_output {
    image img;
};

long num_rows(const rgb_output &v) {
    return v.img.height;
}
long num_columns(const rgb_output &v) {
    return v.img.width;
}
long width_step(const rgb_output &v) {
    return static_cast<long>(v.img.width) * kChannels;
}
void *image_data(rgb_output &v) {
    return v.img.rgb.data();
}
void set_image_size(rgb_output &v, long rows, long cols) {
    v.img.height = static_cast<int>(rows);
    v.img.width = static_cast<int>(cols);
    v.img.rgb.resize(static_cast<size_t>(rows * cols * kChannels));
}

}  // namespace
}  // namespace facevec::embed

namespace dlib {
template <>
struct image_traits<facevec::embed::const_rgb_view> {
    using pixel_type = rgb_pixel;
};
template <>
struct image_traits<facevec::embed::rgb_output> {
    using pixel_type = rgb_pixel;
};
}  // namespace dlib

namespace facevec::embed {
namespace {

using detector_type = dlib::frontal_face_detector;

// A detection in the coordinates of the image given to align().
struct detection {
    face_box box;
    double score = 0;
};

dlib::rectangle to_dlib(const face_box &b) {
    return {std::lround(b.left), std::lround(b.top), std::lround(b.right) - 1,
            std::lround(b.bottom) - 1};
}

status check_input(const image &img, const std::string &name,
                   const align_options &opts) {
    const auto expected = static_cast<size_t>(img.width) *
                          static_cast<size_t>(img.height) * kChannels;
    if (img.width < 1 || img.height < 1 || img.rgb.size() != expected) {
        return invalid_argument(
            name + ": image is empty or its pixel buffer does not match " +
            std::to_string(img.width) + " x " + std::to_string(img.height));
    }
    const align_spec &s = opts.spec;
    if (s.size < 1 || s.size > kMaxChipSide) {
        return invalid_argument(name + ": chip size " + std::to_string(s.size) +
                                " is outside [1, 4096]");
    }
    if (!(s.padding >= 0 && s.padding <= kMaxPadding)) {
        return invalid_argument(name + ": padding " +
                                std::to_string(s.padding) +
                                " is outside [0, 4]");
    }
    if (!(opts.center_fraction > 0 && opts.center_fraction <= 1)) {
        return invalid_argument(name + ": center fraction " +
                                std::to_string(opts.center_fraction) +
                                " is outside (0, 1]");
    }
    if (opts.detect_max_side < kDetectorWindow) {
        return invalid_argument(name + ": detect_max_side " +
                                std::to_string(opts.detect_max_side) +
                                " is below the detector's 80 px window");
    }
    return status::ok();
}

// The central square of `fraction` of the shorter side, resized to
// size x size with the preprocessing's resize (antialiased when
// shrinking), so mode center gives exactly the crop preprocess applies.
result<image> center_chip(const image &img, double fraction, int size) {
    const crop_box box =
        center_crop_box(img.width, img.height, static_cast<float>(fraction));
    result<image> square = crop(img, box);
    if (!square.is_ok() || box.width == size) {
        return square;
    }
    return resize(square.value(), size, size);
}

// `out` with one face: the whole image as its box, the centre chip.
result<alignment> center_alignment(const image &img, double fraction, int size,
                                   alignment out) {
    result<image> chip = center_chip(img, fraction, size);
    if (!chip.is_ok()) {
        return chip.error();
    }
    aligned_face face;
    face.box = {0, 0, static_cast<double>(img.width),
                static_cast<double>(img.height)};
    face.chip = std::move(chip).value();
    out.faces.push_back(std::move(face));
    return out;
}

// Detections in `scaled`, an image `scale` times the original's size,
// mapped back to the original's coordinates.
template <typename Image>
std::vector<detection> run_detector(detector_type &det, const Image &scaled,
                                    double scale) {
    std::vector<dlib::rect_detection> found;
    det(scaled, found);

    std::vector<detection> out;
    out.reserve(found.size());
    for (const dlib::rect_detection &d : found) {
        const dlib::rectangle &r = d.rect;
        out.push_back({{r.left() / scale, r.top() / scale,
                        (r.right() + 1) / scale, (r.bottom() + 1) / scale},
                       d.detection_confidence});
    }
    return out;
}

// Detections in `img` resized by `scale` (no copy at scale 1), in the
// coordinates of `img`.
std::vector<detection> detect_at(detector_type &det, const image &img,
                                 double scale) {
    const const_rgb_view full{&img};
    if (scale == 1.0) {
        return run_detector(det, full, 1.0);
    }
    dlib::array2d<dlib::rgb_pixel> scaled(
        std::max(1L, std::lround(img.height * scale)),
        std::max(1L, std::lround(img.width * scale)));
    dlib::resize_image(full, scaled);
    return run_detector(det, scaled,
                        static_cast<double>(scaled.nc()) / img.width);
}

// The indices of the detections that become chips.
std::vector<size_t> choose_faces(const std::vector<detection> &dets,
                                 const image &img, face_choice choice) {
    std::vector<face_box> boxes;
    for (const detection &d : dets) {
        boxes.push_back(d.box);
    }
    std::vector<size_t> order(dets.size());
    for (size_t i = 0; i < order.size(); ++i) {
        order[i] = i;
    }
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return boxes[a].area() > boxes[b].area();
    });

    switch (choice) {
        case face_choice::all:
            return order;
        case face_choice::largest:
            return {order.front()};
        case face_choice::central:
            return {static_cast<size_t>(
                choose_central_face(boxes, img.width, img.height))};
    }
    FACEVEC_ASSERT(false, "unknown face_choice");
}

}  // namespace

struct aligner::impl {
    dlib::shape_predictor landmarks;
    detector_type prototype;

    // Detectors not lent to a call right now; grows to the number of
    // concurrent callers.
    std::mutex pool_mutex;
    std::vector<std::unique_ptr<detector_type>> pool;

    std::unique_ptr<detector_type> borrow() {
        std::lock_guard<std::mutex> lock(pool_mutex);
        if (pool.empty()) {
            return std::make_unique<detector_type>(prototype);
        }
        std::unique_ptr<detector_type> d = std::move(pool.back());
        pool.pop_back();
        return d;
    }

    void give_back(std::unique_ptr<detector_type> d) {
        std::lock_guard<std::mutex> lock(pool_mutex);
        pool.push_back(std::move(d));
    }

    std::vector<detection> detect(const image &img, const align_options &opts,
                                  bool &upsampled);
    aligned_face landmark_and_cut(const image &img, const detection &d,
                                  const align_spec &spec) const;
};

// Detects at the first pass's scale (1, or less for photos larger than
// detect_max_side); when that finds nothing, once more at twice the
// scale, capped (see align_options::upsample_retry).
std::vector<detection> aligner::impl::detect(const image &img,
                                             const align_options &opts,
                                             bool &upsampled) {
    const int longer = std::max(img.width, img.height);
    const double first =
        std::min(1.0, static_cast<double>(opts.detect_max_side) / longer);
    const double second =
        std::min(kRetryFactor * first, kRetryFactor * opts.detect_max_side /
                                           static_cast<double>(longer));

    std::unique_ptr<detector_type> det = borrow();
    std::vector<detection> dets = detect_at(*det, img, first);
    upsampled = false;
    if (dets.empty() && opts.upsample_retry &&
        second >= kMinRetryGain * first) {
        dets = detect_at(*det, img, second);
        upsampled = !dets.empty();
    }
    give_back(std::move(det));
    return dets;
}

// Landmarks on the full-resolution image, then the chip cut from it.
aligned_face aligner::impl::landmark_and_cut(const image &img,
                                             const detection &d,
                                             const align_spec &spec) const {
    const const_rgb_view full{&img};
    const dlib::full_object_detection shape = landmarks(full, to_dlib(d.box));

    aligned_face face;
    face.box = d.box;
    face.score = d.score;
    face.landmarks.reserve(shape.num_parts());
    for (unsigned long i = 0; i < shape.num_parts(); ++i) {
        face.landmarks.push_back({static_cast<double>(shape.part(i).x()),
                                  static_cast<double>(shape.part(i).y())});
    }

    rgb_output chip;
    dlib::extract_image_chip(
        full,
        dlib::get_face_chip_details(
            shape, static_cast<unsigned long>(spec.size), spec.padding),
        chip);
    face.chip = std::move(chip.img);
    return face;
}

result<aligner> aligner::create(const std::string &landmark_model) {
    if (!std::filesystem::is_regular_file(landmark_model)) {
        return not_found(landmark_model +
                         ": landmark model not found (Debian package "
                         "libdlib-data)");
    }
    auto p = std::make_unique<impl>();
    try {
        dlib::deserialize(landmark_model) >> p->landmarks;
    } catch (const std::exception &e) {
        return corruption(landmark_model +
                          ": not a dlib shape predictor: " + e.what());
    }
    if (p->landmarks.num_parts() != kLandmarkCount) {
        return corruption(landmark_model + ": has " +
                          std::to_string(p->landmarks.num_parts()) +
                          " landmarks, expected 68");
    }
    p->prototype = dlib::get_frontal_face_detector();
    return aligner(std::move(p));
}

aligner::aligner(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
aligner::aligner(aligner &&) noexcept = default;
aligner &aligner::operator=(aligner &&) noexcept = default;
aligner::~aligner() = default;

result<alignment> aligner::align(const image &img, const std::string &name,
                                 const align_options &opts) const {
    FACEVEC_RETURN_IF_ERROR(check_input(img, name, opts));
    const int size = opts.spec.size;
    alignment out;

    try {
        switch (opts.mode) {
            case align_mode::none: {
                // A chip of another size: its central square, resized.
                return center_alignment(img, /*fraction=*/1.0, size,
                                        std::move(out));
            }
            case align_mode::center: {
                return center_alignment(img, opts.center_fraction, size,
                                        std::move(out));
            }
            case align_mode::detect:
                break;
        }

        std::vector<detection> dets = impl_->detect(img, opts, out.upsampled);
        out.faces_found = static_cast<int>(dets.size());
        if (dets.empty()) {
            if (!opts.center_fallback) {
                return not_found(name + ": no face found");
            }
            logger()->debug("{}: no face found, centre crop used", name);
            out.fallback = true;
            return center_alignment(img, opts.center_fraction, size,
                                    std::move(out));
        }

        for (size_t i : choose_faces(dets, img, opts.choice)) {
            out.faces.push_back(
                impl_->landmark_and_cut(img, dets[i], opts.spec));
        }
    } catch (const std::exception &e) {
        return status(error_code::internal,
                      name + ": dlib failed while aligning: " + e.what());
    }
    return out;
}

result<alignment> aligner::align_file(const std::string &path,
                                      const align_options &opts) const {
    result<image> img = decode_file(path);
    if (!img) {
        return img.error();
    }
    return align(img.value(), path, opts);
}

std::function<result<image>(const image &, const std::string &)>
make_align_stage(std::shared_ptr<const aligner> a, align_options opts) {
    FACEVEC_ASSERT(a != nullptr, "make_align_stage needs an aligner");
    if (opts.choice == face_choice::all) {
        opts.choice = face_choice::largest;
    }
    return [a = std::move(a), opts](const image &photo,
                                    const std::string &name) -> result<image> {
        result<alignment> r = a->align(photo, name, opts);
        if (!r.is_ok()) {
            return r.error();
        }
        return std::move(r.value().faces.front().chip);
    };
}

result<align_mode> parse_align_mode(const std::string &name) {
    if (name == "auto") {
        return align_mode::detect;
    }
    if (name == "none") {
        return align_mode::none;
    }
    if (name == "center") {
        return align_mode::center;
    }
    return invalid_argument("align mode '" + name +
                            "' is not one of auto, none, center");
}

const char *align_mode_name(align_mode mode) {
    switch (mode) {
        case align_mode::detect:
            return "auto";
        case align_mode::none:
            return "none";
        case align_mode::center:
            return "center";
    }
    return "unknown";
}

int choose_central_face(const std::vector<face_box> &boxes, int width,
                        int height) {
    const double cx = width / 2.0;
    const double cy = height / 2.0;

    // The largest box covering the centre.
    int best = -1;
    for (size_t i = 0; i < boxes.size(); ++i) {
        const face_box &b = boxes[i];
        const bool covers =
            b.left <= cx && cx < b.right && b.top <= cy && cy < b.bottom;
        if (covers && (best < 0 || b.area() > boxes[best].area())) {
            best = static_cast<int>(i);
        }
    }
    if (best >= 0) {
        return best;
    }

    // Else the nearest box, distance measured in units of its own size.
    double best_cost = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < boxes.size(); ++i) {
        const face_box &b = boxes[i];
        const double dx = std::max({b.left - cx, 0.0, cx - b.right});
        const double dy = std::max({b.top - cy, 0.0, cy - b.bottom});
        const double cost =
            std::hypot(dx, dy) / std::sqrt(std::max(b.area(), 1.0));
        if (cost < best_cost) {
            best_cost = cost;
            best = static_cast<int>(i);
        }
    }
    return best;
}

}  // namespace facevec::embed
