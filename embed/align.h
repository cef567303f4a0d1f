// Face alignment: turns a photo into the face chips the embedders expect.
//
// In the default mode an aligner finds every frontal face with dlib's HOG
// detector, places dlib's 68 landmarks on each, and cuts an upright chip
// whose eyes, nose and mouth sit where the spec's network expects them
// (dlib's face-chip geometry: a similarity transform of the landmarks
// onto a mean face). Boxes and landmarks are in the pixel coordinates of
// the image given. A photo without a face is an error, never a silently
// wrong chip, unless the caller asks for the centre-crop fallback; the
// result then says so.
//
// dlib stays inside align_*.cpp: this header pulls in none of it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "embed/image.h"

namespace facevec::embed {

// Where the 68-point landmark model of Debian's libdlib-data lives.
inline constexpr const char *kDefaultLandmarkModel =
    "/usr/share/dlib/shape_predictor_68_face_landmarks.dat";

// Side of the centre square of mode center, as a fraction of the shorter
// image side: the reference crop, 120 of LFW's 250 px (the embedder's
// kCenterCropFraction).
inline constexpr double kReferenceCenterFraction = 0.48;

// Longer side, in px, above which photos are shrunk for detection.
inline constexpr int kDefaultDetectMaxSide = 800;

// The chip one network expects: its side in pixels and the margin around
// the face. padding is dlib's: the chip spans (1 + 2 * padding) times the
// face's inner region (brows to chin) across, centred on it.
struct align_spec {
    int size = 150;         // chips are size x size RGB
    double padding = 0.25;  // >= 0

    // The face ResNet: 150 x 150, padding 0.25, the geometry its
    // training chips had.
    static align_spec face_resnet() { return {150, 0.25}; }

    // VGG16: 224 x 224 with padding 0.4. A looser chip than the ResNet's
    // so that the whole head outline and some hair stay in view, like the
    // loosely cropped faces VGG-style face networks are trained on; at
    // 224 px the inner face then spans 124 px, close to the ResNet's 100.
    static align_spec vgg16() { return {224, 0.4}; }
};

enum class align_mode {
    detect,  // detect, place landmarks, cut the chip ("auto"; for photos)
    none,    // the input already is a chip: only resized to spec.size
    center,  // a centre square of center_fraction, resized (no detection)
};

// Which faces of a photo with several become chips.
enum class face_choice {
    all,      // every face, largest first
    largest,  // the largest box
    central,  // the face the photo is about; see choose_central_face()
};

// Parses "auto", "none" or "center"; invalid_argument names the value.
result<align_mode> parse_align_mode(const std::string &name);
const char *align_mode_name(align_mode mode);

struct align_options {
    align_spec spec;
    align_mode mode = align_mode::detect;
    face_choice choice = face_choice::central;

    // When no face is found: false makes it a not_found error; true
    // returns a centre crop instead, with alignment::fallback set.
    bool center_fallback = false;

    // Side of the centre square as a fraction of the shorter image side
    // (mode center and the fallback).
    double center_fraction = kReferenceCenterFraction;

    // Photos larger than this (longer side, px) are shrunk for detection;
    // boxes and landmarks are mapped back, and the chip is cut from the
    // full-resolution image. 800 px keeps faces down to ~1/10 of the
    // picture above the detector's 80 px window at 1x.
    int detect_max_side = kDefaultDetectMaxSide;

    // When the first pass finds nothing, a second pass runs at twice its
    // resolution, capped at 2 * detect_max_side on the longer side: a
    // 250 px LFW photo is searched again at 500 px (faces smaller than
    // the 80 px window), a 1920 px photo at 1600 px. Skipped when the cap
    // leaves less than 1.25x the first pass's resolution.
    bool upsample_retry = true;
};

// A point in image pixel coordinates.
struct point2 {
    double x = 0;
    double y = 0;
};

// An axis-aligned box in image pixel coordinates; right and bottom are
// exclusive.
struct face_box {
    double left = 0;
    double top = 0;
    double right = 0;
    double bottom = 0;

    double width() const { return right - left; }
    double height() const { return bottom - top; }
    double area() const { return width() * height(); }
};

struct aligned_face {
    face_box box;                   // the detector's box
    double score = 0;               // detector confidence, > 0 when found
    std::vector<point2> landmarks;  // 68 points (dlib / iBUG order), or
                                    // empty in modes none and center
    image chip;                     // spec.size x spec.size RGB
};

struct alignment {
    // The chosen faces (one unless face_choice::all), each with its chip.
    std::vector<aligned_face> faces;
    int faces_found = 0;     // faces the detector found in the photo
    bool fallback = false;   // no face: faces[0] is a centre crop
    bool upsampled = false;  // found only by the second, finer pass
};

// Finds, landmarks and cuts faces. Thread-safe: any number of threads
// may call align() on one aligner at once. The landmark model is shared
// (dlib's shape_predictor is safe for concurrent use); the HOG detector
// keeps scratch state per call, so the aligner keeps a pool of detector
// copies and lends one to each concurrent call (at most one per thread
// that is aligning at the same time).
class aligner {
  public:
    // Loads the landmark model (kDefaultLandmarkModel by default).
    // not_found when the file is absent; corruption when it is not a
    // dlib shape predictor with 68 parts.
    static result<aligner> create(
        const std::string &landmark_model = kDefaultLandmarkModel);

    aligner(aligner &&) noexcept;
    aligner &operator=(aligner &&) noexcept;
    ~aligner();

    // Aligns `img` (8-bit RGB). `name` names the image in errors, e.g.
    // its path. Errors: invalid_argument for an empty or inconsistent
    // image or a bad spec (size < 1 or > 4096, padding < 0 or > 4,
    // center_fraction outside (0, 1]); not_found "<name>: no face found"
    // in mode detect when the detector finds no face and
    // center_fallback is off.
    result<alignment> align(const image &img, const std::string &name,
                            const align_options &opts = {}) const;

    // decode_file(path) then align(); decoding errors are returned as-is.
    result<alignment> align_file(const std::string &path,
                                 const align_options &opts = {}) const;

  private:
    struct impl;
    explicit aligner(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

// The aligner as the embedder's alignment stage (embedder.h,
// embedder_options::stage): the chip of the face opts.choice picks
// (face_choice::all takes the largest), or align()'s error. Every copy of
// the stage shares `a`; thread-safe like align().
std::function<result<image>(const image &, const std::string &)>
make_align_stage(std::shared_ptr<const aligner> a, align_options opts = {});

// The index in `boxes` of the face an image of width x height is about,
// or -1 when `boxes` is empty. Among the boxes that contain the image
// centre the largest wins (a small background face near the centre does
// not beat the subject whose box covers it); when none contains the
// centre, the box nearest to it relative to its own size wins.
int choose_central_face(const std::vector<face_box> &boxes, int width,
                        int height);

}  // namespace facevec::embed
