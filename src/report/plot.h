// Line charts for training loss curves and evaluation reports (loss and latency against context
// length), drawn with Cairo: anti-aliased lines, the system's sans-serif font, written as PNG with
// an SVG copy next to it.
//
//   ttt::report::Series s{"ttt-e2e", {1024, 2048, 4096}, {3.1, 2.9, 2.8}};
//   ttt::report::ChartOptions opt;
//   opt.title = "Loss vs context"; opt.x_label = "context (tokens)"; opt.y_label = "loss";
//   opt.log_x = true;  // context lengths: ticks 1K, 2K, 4K ...
//   ttt::report::write_line_chart("loss_vs_context.png", {s}, opt);  // and .svg
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ttt::report {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

// One line. Points are joined in the order given; a point with a non-finite coordinate (or a
// non-positive one on a log axis) is skipped and breaks the line (a gap). A point with no drawable
// neighbour is drawn as a dot, so single points stay visible.
struct Series {
  std::string label;           // legend text; series with an empty label get no legend entry
  std::vector<double> x, y;    // same length
  int color = -1;              // palette index (see palette_color); -1: the series' position
  bool dashed = false;         // dashed line; also implied for auto colours beyond the palette
  bool markers = false;        // a dot at every drawn point
  double line_width = 2.0;     // pixels, anti-aliased; clamped to [1, 12]
};

// Log-axis tick spacing. Auto: powers of two when every value on the axis is a power of two or the
// axis spans at most 2^11; powers of ten otherwise.
enum class LogBase { Auto, Two, Ten };

struct ChartOptions {
  std::string title, x_label, y_label;
  int width = 900, height = 560;  // pixels; at least kMinWidth x kMinHeight
  bool log_x = false, log_y = false;
  LogBase log_base_x = LogBase::Auto, log_base_y = LogBase::Auto;
  // Axis range overrides; unset ends come from the data (with a small margin).
  std::optional<double> x_min, x_max, y_min, y_max;
  bool legend = true;  // boxed legend in the plot corner that covers the fewest line pixels
  bool grid = true;    // light grid lines at the major ticks
  // Legend outside the plot (on the right) when every corner inside would cover some line.
  bool legend_may_go_outside = true;
  int text_scale = 1;  // 1..4: labels are 10 + 3 x text_scale pixels high, the title 1.4 x that
};

inline constexpr int kMinWidth = 200, kMinHeight = 150, kMaxSize = 8192;

// An 8-bit RGB raster, row-major, 3 bytes per pixel.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const;  // throws std::out_of_range outside the image
};

struct Tick {
  double value = 0;
  std::string label;
};

// "Nice" linear ticks (steps of 1, 2 or 5 x 10^k) inside [lo, hi], at most `max_ticks` of them
// (at least 2 are returned when the range allows). Labels use the step's decimal places.
std::vector<Tick> linear_ticks(double lo, double hi, int max_ticks = 8);

// Log-axis ticks inside [lo, hi] (0 < lo < hi). Base Two: powers of two, thinned to a stride that
// keeps at most `max_ticks`, labelled 1K, 2K ... 64K, 1M for multiples of 1024 (so context lengths
// 1024..65536 give 1K 2K 4K 8K 16K 32K 64K). Base Ten: decades, filled in with 2 and 5 (then
// every integer mantissa) when the span is too short to show at least 3 ticks. Auto resolves by
// span as LogBase describes. Falls back to linear ticks where no power lies inside the range.
std::vector<Tick> log_ticks(double lo, double hi, LogBase base = LogBase::Auto, int max_ticks = 10);

// Colour-blind-friendly palette (Okabe-Ito, yellow swapped for grey): blue, vermillion, bluish
// green, reddish purple, orange, sky blue, black, grey; indices wrap around.
Rgb palette_color(int index);

// Renders the chart. Throws std::invalid_argument (with a message naming the problem) for a size
// below kMinWidth x kMinHeight or above kMaxSize, x/y of different lengths, a non-finite or empty
// explicit range, or a non-positive explicit range on a log axis. Series with no drawable points
// are allowed (they get a legend entry but no line); with no data at all the axes span [0, 1]
// ([1, 10] on a log axis). A zero-height data range (constant series) is widened around the value.
Image render_line_chart(const std::vector<Series>& series, const ChartOptions& opt);

// The chart as PNG and as SVG (the same drawing, vector: lines and text stay sharp at any size).
std::string encode_line_chart_png(const std::vector<Series>& series, const ChartOptions& opt);
std::string encode_line_chart_svg(const std::vector<Series>& series, const ChartOptions& opt);

// "x.png" -> "x.svg"; any other name gets ".svg" appended.
std::string svg_path_for(const std::string& png_path);

// Writes the chart to `png_path` (PNG) and svg_path_for(png_path) (SVG), each atomically
// (temporary file in the target's directory, then rename; on failure the temporary file is
// removed and the target untouched). Throws std::invalid_argument as render_line_chart does,
// std::runtime_error if writing fails.
void write_line_chart(const std::string& png_path, const std::vector<Series>& series, const ChartOptions& opt);

}  // namespace ttt::report
