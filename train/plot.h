// PNG plots of evaluation and training figures, drawn by tools/plot.py
// (python3 with matplotlib, the Debian package python3-matplotlib).
//
// The figures are written to a temporary JSON file and the script is run
// without a shell: python3 plot.py DATA.json OUT.png.
#pragma once

#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "train/eval.h"

namespace facevec::train {

// tools/plot.py of the source tree this library was built from.
std::string default_plot_script();

// {"kind": "verification", "roc": {"far": [...], "tar": [...]},
//  "same": [...], "different": [...], "threshold", "auc", "accuracy"}.
nlohmann::json verification_plot_data(std::span<const float> distances,
                                      std::span<const uint8_t> same,
                                      const verification_report &r);

// Runs the script on `data` (a verification_plot_data object, or a
// training report from report_json with "kind": "training" added) to
// write `png`. Errors: not_found when python3 or the script is missing;
// internal when the script fails (its last output lines in the message);
// io_error for the temporary file.
status draw_plot(const nlohmann::json &data, const std::string &png,
                 const std::string &script = default_plot_script());

}  // namespace facevec::train
