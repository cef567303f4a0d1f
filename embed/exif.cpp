// EXIF orientation through libexif.
#include <libexif/exif-data.h>

#include "embed/image_internal.h"

namespace facevec::embed::internal {
namespace {

constexpr int kUpright = 1;
constexpr int kLastOrientation = 8;

}  // namespace

int exif_orientation(std::span<const uint8_t> exif) {
    ExifData *data = exif_data_new_from_data(
        exif.data(), static_cast<unsigned int>(exif.size()));
    if (data == nullptr)
        return kUpright;

    // Only IFD0 describes the main image; IFD1 is the thumbnail.
    int orientation = kUpright;
    ExifEntry *entry =
        exif_content_get_entry(data->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
    if (entry != nullptr && entry->format == EXIF_FORMAT_SHORT &&
        entry->components >= 1 && entry->data != nullptr) {
        orientation =
            exif_get_short(entry->data, exif_data_get_byte_order(data));
    }
    exif_data_unref(data);
    return orientation >= kUpright && orientation <= kLastOrientation
               ? orientation
               : kUpright;
}

}  // namespace facevec::embed::internal
