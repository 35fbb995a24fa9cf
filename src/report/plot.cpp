#include "report/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <cstring>
#include <stdexcept>

#include <cairo-svg.h>
#include <cairo.h>

#include "io/atomic_file.h"

namespace ttt::report {

Rgb Image::at(int x, int y) const {
  if (x < 0 || y < 0 || x >= width || y >= height)
    throw std::out_of_range("pixel (" + std::to_string(x) + ", " + std::to_string(y) + ") outside a " +
                            std::to_string(width) + "x" + std::to_string(height) + " image");
  const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3;
  return Rgb{rgb[i], rgb[i + 1], rgb[i + 2]};
}

Rgb palette_color(int index) {
  // Okabe & Ito (2008), "Color Universal Design"; yellow (too pale on white) replaced by grey.
  static constexpr Rgb kPalette[8] = {
      {0, 114, 178},   // blue
      {213, 94, 0},    // vermillion
      {0, 158, 115},   // bluish green
      {204, 121, 167}, // reddish purple
      {230, 159, 0},   // orange
      {86, 180, 233},  // sky blue
      {0, 0, 0},       // black
      {136, 136, 136}, // grey
  };
  const int n = 8;
  return kPalette[((index % n) + n) % n];
}

namespace {

// ---------------------------------------------------------------------------------------------
// Number formatting

// Trims "e+05" to "e5" and "e-05" to "e-5".
std::string tidy_exponent(std::string s) {
  const auto e = s.find('e');
  if (e == std::string::npos) return s;
  std::string mant = s.substr(0, e), ex = s.substr(e + 1);
  bool neg = false;
  if (!ex.empty() && (ex[0] == '+' || ex[0] == '-')) {
    neg = ex[0] == '-';
    ex.erase(0, 1);
  }
  while (ex.size() > 1 && ex[0] == '0') ex.erase(0, 1);
  return mant + "e" + (neg ? "-" : "") + ex;
}

// The shortest plain rendering of v that reads back within a relative 1e-9.
std::string shortest(double v) {
  if (v == 0) return "0";
  char buf[64];
  const double a = std::fabs(v);
  if (a >= 1e-4 && a < 1e7) {
    for (int d = 0; d <= 12; ++d) {
      std::snprintf(buf, sizeof buf, "%.*f", d, v);
      if (std::fabs(std::strtod(buf, nullptr) - v) <= 1e-9 * a) return buf;
    }
    return buf;
  }
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*e", p - 1, v);
    if (std::fabs(std::strtod(buf, nullptr) - v) <= 1e-9 * a) break;
  }
  // "%.0e" of 1e5 is "1e+05"; "%.2e" of 1.25e5 is "1.25e+05".
  return tidy_exponent(buf);
}

// Labels for 2^k: 1K, 2K ... 512K, 1M ... 512M, 1G ...; plain below 1024.
std::string pow2_label(double v) {
  static constexpr struct {
    double unit;
    const char* suffix;
  } kUnits[] = {{1099511627776.0, "T"}, {1073741824.0, "G"}, {1048576.0, "M"}, {1024.0, "K"}};
  for (const auto& u : kUnits) {
    if (v >= u.unit && std::fmod(v, u.unit) == 0) return shortest(v / u.unit) + u.suffix;
  }
  return shortest(v);
}

int decimals_for_step(double step) {
  const int e = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  return e < 0 ? -e : 0;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  std::string s = buf;
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s.erase(0, 1);  // no "-0"
  return s;
}

// ---------------------------------------------------------------------------------------------
// Ticks

bool finite_pair(double lo, double hi) { return std::isfinite(lo) && std::isfinite(hi); }

// The smallest step from {1, 2, 5} x 10^k that puts at most `max_ticks` multiples in [lo, hi].
double nice_step(double lo, double hi, int max_ticks) {
  const double span = hi - lo;
  const double raw = span / std::max(1, max_ticks);
  double base = std::pow(10.0, std::floor(std::log10(raw)) - 1);
  for (int iter = 0; iter < 40; ++iter, base *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double step = m * base;
      const double eps = 1e-9;
      const double count = std::floor(hi / step + eps) - std::ceil(lo / step - eps) + 1;
      if (count <= max_ticks) return step;
    }
  }
  return span;
}

// Linear tick labels sharing one format: fixed decimals from the step; K/M/G suffixes for large
// round values; exponent notation for extreme magnitudes.
std::vector<std::string> linear_labels(const std::vector<double>& values, double step) {
  double max_abs = 0;
  for (double v : values) max_abs = std::max(max_abs, std::fabs(v));
  std::vector<std::string> out;
  if (max_abs >= 1e13 || (step < 1e-5 && max_abs < 1e-3)) {
    for (double v : values) out.push_back(std::fabs(v) < step * 1e-6 ? "0" : shortest(v));
    return out;
  }
  if (max_abs >= 1e4 && step >= 100) {
    static constexpr struct {
      double unit;
      const char* suffix;
    } kUnits[] = {{1e9, "G"}, {1e6, "M"}, {1e3, "K"}};
    for (const auto& u : kUnits) {
      if (u.unit > max_abs) continue;
      const int d = decimals_for_step(step / u.unit);
      if (d > 1) continue;
      for (double v : values) out.push_back(std::fabs(v) < step * 1e-6 ? "0" : fixed(v / u.unit, d) + u.suffix);
      return out;
    }
  }
  const int d = decimals_for_step(step);
  for (double v : values) out.push_back(fixed(std::fabs(v) < step * 1e-6 ? 0.0 : v, d));
  return out;
}

void check_range(double lo, double hi, const char* what) {
  if (!finite_pair(lo, hi) || !(lo < hi))
    throw std::invalid_argument(std::string(what) + ": need finite lo < hi, got [" + shortest(lo) + ", " +
                                shortest(hi) + "]");
}

bool is_pow2(double v) {
  int e = 0;
  return v > 0 && std::isfinite(v) && std::frexp(v, &e) == 0.5;
}

LogBase resolve_base(LogBase base, double lo, double hi) {
  if (base != LogBase::Auto) return base;
  return hi / lo <= 2048.0 * (1 + 1e-9) ? LogBase::Two : LogBase::Ten;
}

// Keeps every stride-th element, choosing the phase that keeps values whose exponent is a
// multiple of the stride (so 1, 10^2, 10^4 ... or 2^0, 2^2 ...).
std::vector<Tick> thin(const std::vector<std::pair<int, Tick>>& ticks, int max_ticks) {
  std::vector<Tick> out;
  const int n = static_cast<int>(ticks.size());
  const int stride = std::max(1, (n + max_ticks - 1) / std::max(1, max_ticks));
  for (const auto& [k, t] : ticks) {
    if (((k % stride) + stride) % stride == 0) out.push_back(t);
  }
  if (out.empty() && !ticks.empty()) out.push_back(ticks.front().second);
  return out;
}

}  // namespace

std::vector<Tick> linear_ticks(double lo, double hi, int max_ticks) {
  check_range(lo, hi, "linear_ticks");
  max_ticks = std::max(2, max_ticks);
  const double step = nice_step(lo, hi, max_ticks);
  const double eps = 1e-9;
  const long long k0 = static_cast<long long>(std::ceil(lo / step - eps));
  const long long k1 = static_cast<long long>(std::floor(hi / step + eps));
  std::vector<double> values;
  for (long long k = k0; k <= k1; ++k) values.push_back(static_cast<double>(k) * step);
  const auto labels = linear_labels(values, step);
  std::vector<Tick> out;
  for (size_t i = 0; i < values.size(); ++i) out.push_back({values[i], labels[i]});
  return out;
}

std::vector<Tick> log_ticks(double lo, double hi, LogBase base, int max_ticks) {
  check_range(lo, hi, "log_ticks");
  if (!(lo > 0)) throw std::invalid_argument("log_ticks: range must be positive, got lo = " + shortest(lo));
  max_ticks = std::max(2, max_ticks);
  base = resolve_base(base, lo, hi);
  const double eps = 1e-9;
  std::vector<std::pair<int, Tick>> ticks;
  if (base == LogBase::Two) {
    const int k0 = static_cast<int>(std::ceil(std::log2(lo) - eps));
    const int k1 = static_cast<int>(std::floor(std::log2(hi) + eps));
    for (int k = k0; k <= k1; ++k) {
      const double v = std::ldexp(1.0, k);
      ticks.push_back({k, {v, pow2_label(v)}});
    }
    if (ticks.size() >= 2) return thin(ticks, max_ticks);
    return linear_ticks(lo, hi, std::min(max_ticks, 6));
  }
  const int e0 = static_cast<int>(std::floor(std::log10(lo) + eps));
  const int e1 = static_cast<int>(std::floor(std::log10(hi) + eps));
  auto in_range = [&](double v) { return v >= lo * (1 - eps) && v <= hi * (1 + eps); };
  auto collect = [&](std::initializer_list<int> mantissas) {
    ticks.clear();
    int idx = 0;
    for (int e = e0; e <= e1; ++e) {
      for (int m : mantissas) {
        // m x 10^e, formed so that e.g. 2 x 10^-1 prints as 0.2 exactly.
        const double v = e >= 0 ? m * std::pow(10.0, e) : m / std::pow(10.0, -e);
        if (in_range(v)) ticks.push_back({mantissas.size() == 1 ? e : idx++, {v, shortest(v)}});
      }
    }
  };
  collect({1});
  if (ticks.size() >= 3) return thin(ticks, max_ticks);
  collect({1, 2, 5});
  if (ticks.size() >= 3 && static_cast<int>(ticks.size()) <= max_ticks) return thin(ticks, max_ticks);
  if (ticks.size() < 3) {
    collect({1, 2, 3, 4, 5, 6, 7, 8, 9});
    if (ticks.size() >= 2) return thin(ticks, max_ticks);
    return linear_ticks(lo, hi, std::min(max_ticks, 6));
  }
  collect({1});
  if (ticks.size() >= 2) return thin(ticks, max_ticks);
  return linear_ticks(lo, hi, std::min(max_ticks, 6));
}

namespace {

// ---------------------------------------------------------------------------------------------
// Drawing through Cairo: one routine draws on any Cairo surface (an image for PNG and pixel
// access, an SVG surface for the vector copy).

constexpr Rgb kText{25, 25, 25};
constexpr Rgb kFrame{70, 70, 70};
constexpr Rgb kGrid{232, 232, 232};
constexpr Rgb kLegendBorder{190, 190, 190};

struct Rect {
  double x0, y0, x1, y1;
};

struct Pt {
  double x, y;
};

void set_color(cairo_t* cr, Rgb c, double alpha = 1) {
  cairo_set_source_rgba(cr, c.r / 255.0, c.g / 255.0, c.b / 255.0, alpha);
}

// Text through Cairo's font selection (fontconfig: the system's sans-serif face, DejaVu Sans on
// Debian). Sizes in pixels.
struct Fonts {
  cairo_t* cr;
  double size, title_size;
  void use(double px, bool bold) const {
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, px);
  }
  double width(const std::string& s, double px, bool bold = false) const {
    if (s.empty()) return 0;
    use(px, bold);
    cairo_text_extents_t e;
    cairo_text_extents(cr, s.c_str(), &e);
    return e.x_advance;
  }
  double w(const std::string& s) const { return width(s, size); }
  // Height of a line of text (cap height plus descenders, as laid out).
  double h() const { return size; }
  // Draws `s` with its top-left corner of the text line at (x, y).
  void draw(double x, double y, const std::string& s, double px, bool bold = false, Rgb c = kText) const {
    if (s.empty()) return;
    use(px, bold);
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    set_color(cr, c);
    // Ascent of the font's capitals: about 0.73 em for sans faces; keeps labels centred on ticks.
    cairo_move_to(cr, x, y + 0.76 * px);
    cairo_show_text(cr, s.c_str());
    cairo_new_path(cr);
  }
};

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  LogBase base = LogBase::Auto;
  double p0 = 0, p1 = 1;  // pixel coordinates of lo and hi
  double f(double v) const { return log ? std::log10(v) : v; }
  double finv(double u) const { return log ? std::pow(10.0, u) : u; }
  double to_px(double v) const { return p0 + (f(v) - f(lo)) / (f(hi) - f(lo)) * (p1 - p0); }
  bool valid(double v) const { return std::isfinite(v) && (!log || v > 0); }
};
// Liang-Barsky: clips the segment to the rectangle; false if nothing is left.
bool clip_segment(double& x0, double& y0, double& x1, double& y1, double rx0, double ry0, double rx1, double ry1) {
  const double dx = x1 - x0, dy = y1 - y0;
  double t0 = 0, t1 = 1;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {x0 - rx0, rx1 - x0, y0 - ry0, ry1 - y0};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return false;
      continue;
    }
    const double r = q[i] / p[i];
    if (p[i] < 0) {
      if (r > t1) return false;
      t0 = std::max(t0, r);
    } else {
      if (r < t0) return false;
      t1 = std::min(t1, r);
    }
  }
  const double nx0 = x0 + t0 * dx, ny0 = y0 + t0 * dy, nx1 = x0 + t1 * dx, ny1 = y0 + t1 * dy;
  x0 = nx0;
  y0 = ny0;
  x1 = nx1;
  y1 = ny1;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Axes


// Data range (plus a margin on the free ends) for one axis.
void fit_axis(Axis& ax, const std::vector<double>& values, std::optional<double> fix_lo, std::optional<double> fix_hi,
              double margin) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (values.empty()) {
    lo = ax.log ? 1 : 0;
    hi = ax.log ? 10 : 1;
  }
  // Work in transformed space (log10 on a log axis).
  double a = ax.f(lo), b = ax.f(hi);
  if (!(b > a)) {  // constant data: widen around the value
    const double d = ax.log ? std::log10(2.0) : (a == 0 ? 1.0 : std::fabs(a) * 0.1);
    a -= d;
    b += d;
  }
  const double span = b - a;
  if (!fix_lo) a -= margin * span;
  if (!fix_hi) b += margin * span;
  if (fix_lo) a = ax.f(*fix_lo);
  if (fix_hi) b = ax.f(*fix_hi);
  if (!(b > a)) {  // one fixed end on the far side of the data
    const double d = ax.log ? 1.0 : std::max(1.0, std::fabs(fix_lo ? a : b));
    if (fix_lo)
      b = a + d;
    else
      a = b - d;
  }
  ax.lo = ax.finv(a);
  ax.hi = ax.finv(b);
  if (fix_lo) ax.lo = *fix_lo;
  if (fix_hi) ax.hi = *fix_hi;
}

LogBase auto_base_from_data(LogBase requested, const std::vector<double>& values, double lo, double hi) {
  if (requested != LogBase::Auto) return requested;
  if (!values.empty() && std::all_of(values.begin(), values.end(), is_pow2)) return LogBase::Two;
  return resolve_base(LogBase::Auto, lo, hi);
}

std::vector<Tick> axis_ticks(const Axis& ax, int max_ticks) {
  return ax.log ? log_ticks(ax.lo, ax.hi, ax.base, max_ticks) : linear_ticks(ax.lo, ax.hi, max_ticks);
}

void check_options(const std::vector<Series>& series, const ChartOptions& opt) {
  if (opt.width < kMinWidth || opt.height < kMinHeight)
    throw std::invalid_argument("line chart size " + std::to_string(opt.width) + "x" + std::to_string(opt.height) +
                                " is too small (minimum " + std::to_string(kMinWidth) + "x" +
                                std::to_string(kMinHeight) + ")");
  if (opt.width > kMaxSize || opt.height > kMaxSize)
    throw std::invalid_argument("line chart size " + std::to_string(opt.width) + "x" + std::to_string(opt.height) +
                                " is too large (maximum " + std::to_string(kMaxSize) + " per side)");
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    if (s.x.size() != s.y.size())
      throw std::invalid_argument("line chart series " + std::to_string(i) + " ('" + s.label + "'): x has " +
                                  std::to_string(s.x.size()) + " values but y has " + std::to_string(s.y.size()));
  }
  auto check_axis = [](const char* name, bool log, std::optional<double> lo, std::optional<double> hi) {
    for (const auto& v : {lo, hi}) {
      if (!v) continue;
      if (!std::isfinite(*v))
        throw std::invalid_argument(std::string("line chart ") + name + " range bound must be finite");
      if (log && !(*v > 0))
        throw std::invalid_argument(std::string("line chart ") + name + " range bound " + shortest(*v) +
                                    " must be positive on a log axis");
    }
    if (lo && hi && !(*lo < *hi))
      throw std::invalid_argument(std::string("line chart ") + name + " range is empty: min " + shortest(*lo) +
                                  " >= max " + shortest(*hi));
  };
  check_axis("x", opt.log_x, opt.x_min, opt.x_max);
  check_axis("y", opt.log_y, opt.y_min, opt.y_max);
  if (opt.text_scale < 1 || opt.text_scale > 4)
    throw std::invalid_argument("line chart text_scale must be in 1..4, got " + std::to_string(opt.text_scale));
}

}  // namespace

namespace {

// Everything the drawing needs, decided before anything is drawn.
struct Chart {
  Rect plot{0, 0, 1, 1};
  Axis ax, ay;
  std::vector<Tick> xticks, yticks;
  struct Drawn {
    std::vector<std::vector<Pt>> runs;  // unbroken polylines in pixel space
    Rgb color;
    bool dashed = false, markers = false;
    double width = 2;
  };
  std::vector<Drawn> drawn;
  std::vector<size_t> entries;  // series with a legend entry
  bool legend = false;
  double legend_x = 0, legend_y = 0, legend_w = 0, legend_h = 0;
};

// Spacing, in pixels, derived from the label font size.
struct Metrics {
  double fs, tick_len, gap, pad, sample, row;
  explicit Metrics(const Fonts& f)
      : fs(f.size), tick_len(0.45 * f.size), gap(0.4 * f.size), pad(0.6 * f.size), sample(2.4 * f.size),
        row(1.45 * f.size) {}
};

// Ranges from the drawable points; y only from points inside an explicit x range.
void fit_ranges(const std::vector<Series>& series, const ChartOptions& opt, Axis& ax, Axis& ay) {
  ax.log = opt.log_x;
  ay.log = opt.log_y;
  auto in_x_range = [&](double x) { return (!opt.x_min || x >= *opt.x_min) && (!opt.x_max || x <= *opt.x_max); };
  std::vector<double> xs, ys;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (ax.valid(s.x[i]) && ay.valid(s.y[i])) {
        xs.push_back(s.x[i]);
        if (in_x_range(s.x[i])) ys.push_back(s.y[i]);
      }
  if (ys.empty())  // nothing inside the x range: fit y to everything
    for (const Series& s : series)
      for (size_t i = 0; i < s.x.size(); ++i)
        if (ax.valid(s.x[i]) && ay.valid(s.y[i])) ys.push_back(s.y[i]);
  fit_axis(ax, xs, opt.x_min, opt.x_max, 0.03);
  fit_axis(ay, ys, opt.y_min, opt.y_max, 0.06);
  ax.base = auto_base_from_data(opt.log_base_x, xs, ax.lo, ax.hi);
  ay.base = auto_base_from_data(opt.log_base_y, ys, ay.lo, ay.hi);
}

// The plot rectangle and ticks for a chart whose right margin is widened by `extra_right`.
void lay_out(Chart& c, const Fonts& f, const ChartOptions& opt, double extra_right) {
  const Metrics m(f);
  const double W = opt.width, H = opt.height;
  const double top = opt.title.empty() ? m.fs : 1.0 * m.fs + f.title_size * 1.5;
  const double bottom = m.tick_len + m.gap + f.h() + (opt.x_label.empty() ? 0 : m.gap + 1.4 * f.h()) + m.fs * 0.8;
  const double plot_h = std::max(10.0, H - top - bottom);
  c.yticks = axis_ticks(c.ay, std::clamp(static_cast<int>(plot_h / (3.2 * m.fs)), 2, 10));
  double ytick_w = 0;
  for (const auto& t : c.yticks) ytick_w = std::max(ytick_w, f.w(t.label));
  const double left = m.fs * 0.8 + (opt.y_label.empty() ? 0 : f.h() + 1.2 * m.gap) + ytick_w + m.gap + m.tick_len;
  double right = 1.5 * m.fs + extra_right;
  double plot_w = std::max(10.0, W - left - right);
  c.ax.p0 = left;
  c.ax.p1 = left + plot_w;
  for (int max_ticks = std::clamp(static_cast<int>(plot_w / (5 * m.fs)), 2, 12);; --max_ticks) {
    c.xticks = axis_ticks(c.ax, max_ticks);
    bool fits = true;
    for (size_t i = 0; i + 1 < c.xticks.size(); ++i) {
      const double d = c.ax.to_px(c.xticks[i + 1].value) - c.ax.to_px(c.xticks[i].value);
      if (d < (f.w(c.xticks[i].label) + f.w(c.xticks[i + 1].label)) / 2.0 + 1.2 * m.fs) fits = false;
    }
    if (fits || max_ticks <= 2) break;
  }
  if (!c.xticks.empty() && extra_right == 0) {  // room for the last x label to overhang on the right
    const double overhang = c.ax.to_px(c.xticks.back().value) + f.w(c.xticks.back().label) / 2.0 - (W - 6);
    if (overhang > 0) {
      right += std::ceil(overhang);
      plot_w = std::max(10.0, W - left - right);
      c.ax.p1 = left + plot_w;
    }
  }
  c.plot = Rect{left, top, left + plot_w, top + plot_h};
  c.ay.p0 = c.plot.y1;  // y grows upwards
  c.ay.p1 = c.plot.y0;
}

// Series in pixel space; a point that cannot be drawn ends a run.
void project(Chart& c, const std::vector<Series>& series) {
  c.drawn.clear();
  for (size_t si = 0; si < series.size(); ++si) {
    const Series& s = series[si];
    Chart::Drawn d;
    d.color = palette_color(s.color >= 0 ? s.color : static_cast<int>(si));
    d.dashed = s.dashed || (s.color < 0 && (si / 8) % 2 == 1);
    d.markers = s.markers;
    d.width = std::clamp(std::isfinite(s.line_width) ? s.line_width : 2.0, 1.0, 12.0);
    std::vector<Pt> run;
    for (size_t i = 0; i < s.x.size(); ++i) {
      Pt p{0, 0};
      bool ok = c.ax.valid(s.x[i]) && c.ay.valid(s.y[i]);
      if (ok) {
        p = {c.ax.to_px(s.x[i]), c.ay.to_px(s.y[i])};
        ok = std::isfinite(p.x) && std::isfinite(p.y);
      }
      if (ok) {
        run.push_back(p);
      } else if (!run.empty()) {
        d.runs.push_back(std::move(run));
        run.clear();
      }
    }
    if (!run.empty()) d.runs.push_back(std::move(run));
    c.drawn.push_back(std::move(d));
  }
}

// How many line samples (every ~2 px) fall in or near the box.
long overlap(const Chart& c, double x0, double y0, double w, double h) {
  long count = 0;
  const Rect& plot = c.plot;
  for (const auto& d : c.drawn)
    for (const auto& run : d.runs)
      for (size_t i = 0; i < run.size(); ++i) {
        const Pt a = run[i], b = i + 1 < run.size() ? run[i + 1] : run[i];
        double x0c = a.x, y0c = a.y, x1c = b.x, y1c = b.y;
        if (!clip_segment(x0c, y0c, x1c, y1c, plot.x0, plot.y0, plot.x1, plot.y1)) continue;
        const double len = std::hypot(x1c - x0c, y1c - y0c);
        const int n = std::clamp(static_cast<int>(len / 2), 1, 4000);
        for (int k = 0; k <= n; ++k) {
          const double px = x0c + (x1c - x0c) * k / n, py = y0c + (y1c - y0c) * k / n;
          if (px >= x0 - 4 && px <= x0 + w + 4 && py >= y0 - 4 && py <= y0 + h + 4) ++count;
        }
      }
  return count;
}

// Layout, projection and the legend's place: the corner of the plot that covers the fewest line
// samples, or outside on the right when every corner covers some and there is room.
Chart plan(const std::vector<Series>& series, const ChartOptions& opt, const Fonts& f) {
  Chart c;
  fit_ranges(series, opt, c.ax, c.ay);
  const Metrics m(f);
  for (size_t i = 0; i < series.size(); ++i)
    if (!series[i].label.empty()) c.entries.push_back(i);
  c.legend = opt.legend && !c.entries.empty();
  double label_w = 0;
  for (size_t i : c.entries) label_w = std::max(label_w, f.w(series[i].label));
  c.legend_w = m.pad + m.sample + m.pad + label_w + m.pad;
  c.legend_h = 2 * m.pad + static_cast<double>(c.entries.size()) * m.row - (m.row - f.h());

  lay_out(c, f, opt, 0);
  project(c, series);
  if (!c.legend) return c;
  const Rect& p = c.plot;
  const double inset = 0.8 * m.fs;
  const double lx = p.x0 + inset, rx = p.x1 - inset - c.legend_w, cx = (p.x0 + p.x1 - c.legend_w) / 2;
  const double ty = p.y0 + inset, by = p.y1 - inset - c.legend_h;
  const std::pair<double, double> candidates[] = {{rx, ty}, {lx, ty}, {rx, by}, {lx, by}, {cx, ty}, {cx, by}};
  long best = -1;
  for (const auto& [x0, y0] : candidates) {
    const long n = overlap(c, x0, y0, c.legend_w, c.legend_h);
    if (best < 0 || n < best) {
      best = n;
      c.legend_x = std::round(x0);
      c.legend_y = std::round(y0);
    }
  }
  const double outside_w = c.legend_w + 1.2 * m.fs;
  if (best > 0 && opt.legend_may_go_outside && (p.x1 - p.x0) - outside_w >= opt.width / 2.0) {
    lay_out(c, f, opt, outside_w);
    project(c, series);
    c.legend_x = std::round(c.plot.x1 + 0.8 * m.fs);
    c.legend_y = std::round(c.plot.y0);
  }
  return c;
}

// A run as a Cairo path. Segments are clipped (in doubles) to a margin around `clip` first:
// Cairo's fixed-point coordinates cannot hold points far outside the image.
void trace_run(cairo_t* cr, const std::vector<Pt>& run, const Rect& clip, double pad) {
  bool pen_down = false;
  Pt last{0, 0};
  for (size_t i = 0; i + 1 < run.size(); ++i) {
    double x0 = run[i].x, y0 = run[i].y, x1 = run[i + 1].x, y1 = run[i + 1].y;
    if (!clip_segment(x0, y0, x1, y1, clip.x0 - pad, clip.y0 - pad, clip.x1 + pad, clip.y1 + pad)) {
      pen_down = false;
      continue;
    }
    if (!pen_down || x0 != last.x || y0 != last.y) cairo_move_to(cr, x0, y0);
    cairo_line_to(cr, x1, y1);
    pen_down = true;
    last = {x1, y1};
  }
}

void stroke_style(cairo_t* cr, const Chart::Drawn& d) {
  set_color(cr, d.color);
  cairo_set_line_width(cr, d.width);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  cairo_set_line_cap(cr, d.dashed ? CAIRO_LINE_CAP_BUTT : CAIRO_LINE_CAP_ROUND);
  const double dash[2] = {2 * d.width + 4, d.width + 4};
  cairo_set_dash(cr, dash, d.dashed ? 2 : 0, 0);
}

void dot(cairo_t* cr, const Rect& clip, Pt p, double r) {
  if (p.x < clip.x0 - r || p.x > clip.x1 + r || p.y < clip.y0 - r || p.y > clip.y1 + r) return;
  cairo_new_sub_path(cr);
  cairo_arc(cr, p.x, p.y, r, 0, 2 * M_PI);
  cairo_fill(cr);
}

void draw_series(cairo_t* cr, const Chart& c) {
  const Rect& p = c.plot;
  cairo_save(cr);
  cairo_rectangle(cr, p.x0, p.y0, p.x1 - p.x0, p.y1 - p.y0);
  cairo_clip(cr);
  for (const auto& d : c.drawn) {
    stroke_style(cr, d);
    for (const auto& run : d.runs) trace_run(cr, run, p, d.width + 8);
    cairo_stroke(cr);
    for (const auto& run : d.runs) {
      if (run.size() == 1 && !d.markers) dot(cr, p, run[0], std::max(2.5, d.width / 2 + 1));
      if (d.markers)
        for (const Pt& q : run) dot(cr, p, q, std::max(3.0, d.width / 2 + 1.5));
    }
  }
  cairo_restore(cr);
}

// Crisp one-pixel lines sit on pixel centres.
double crisp(double v) { return std::floor(v) + 0.5; }

void draw_axes(cairo_t* cr, const Chart& c, const Fonts& f, const ChartOptions& opt) {
  const Metrics m(f);
  const Rect& p = c.plot;
  cairo_set_line_width(cr, 1);
  cairo_set_dash(cr, nullptr, 0, 0);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
  if (opt.grid) {
    set_color(cr, kGrid);
    for (const auto& t : c.xticks) {
      const double x = crisp(c.ax.to_px(t.value));
      if (x > p.x0 + 1 && x < p.x1 - 1) {
        cairo_move_to(cr, x, p.y0);
        cairo_line_to(cr, x, p.y1);
      }
    }
    for (const auto& t : c.yticks) {
      const double y = crisp(c.ay.to_px(t.value));
      if (y > p.y0 + 1 && y < p.y1 - 1) {
        cairo_move_to(cr, p.x0, y);
        cairo_line_to(cr, p.x1, y);
      }
    }
    cairo_stroke(cr);
  }
  set_color(cr, kFrame);
  cairo_rectangle(cr, crisp(p.x0) - 1, crisp(p.y0) - 1, std::floor(p.x1) - std::floor(p.x0) + 1,
                  std::floor(p.y1) - std::floor(p.y0) + 1);
  for (const auto& t : c.xticks) {
    const double x = crisp(c.ax.to_px(t.value));
    cairo_move_to(cr, x, p.y1);
    cairo_line_to(cr, x, p.y1 + m.tick_len);
  }
  for (const auto& t : c.yticks) {
    const double y = crisp(c.ay.to_px(t.value));
    cairo_move_to(cr, p.x0 - 1, y);
    cairo_line_to(cr, p.x0 - 1 - m.tick_len, y);
  }
  cairo_stroke(cr);
  for (const auto& t : c.xticks)
    f.draw(c.ax.to_px(t.value) - f.w(t.label) / 2, p.y1 + m.tick_len + m.gap, t.label, f.size);
  for (const auto& t : c.yticks)
    f.draw(p.x0 - 1 - m.tick_len - m.gap - f.w(t.label), c.ay.to_px(t.value) - f.h() / 2, t.label, f.size);
}

void draw_labels(cairo_t* cr, const Chart& c, const Fonts& f, const ChartOptions& opt) {
  const Metrics m(f);
  const Rect& p = c.plot;
  const double cx = (p.x0 + p.x1) / 2, cy = (p.y0 + p.y1) / 2;
  if (!opt.x_label.empty()) {
    const double w = f.w(opt.x_label);
    f.draw(std::max(2.0, cx - w / 2), p.y1 + m.tick_len + m.gap + f.h() + m.gap + 0.4 * f.h(), opt.x_label, f.size);
  }
  if (!opt.y_label.empty()) {
    const double w = f.w(opt.y_label);
    cairo_save(cr);
    cairo_translate(cr, 0.8 * m.fs, std::min(opt.height - 2.0, cy + w / 2));
    cairo_rotate(cr, -M_PI / 2);
    f.draw(0, 0, opt.y_label, f.size);
    cairo_restore(cr);
  }
  if (!opt.title.empty()) {
    double size = f.title_size;
    double w = f.width(opt.title, size, true);
    if (w > opt.width - 8) {  // shrink a long title to fit
      size = std::max(6.0, size * (opt.width - 8) / w);
      w = f.width(opt.title, size, true);
    }
    double x = cx - w / 2;
    if (x < 4 || x + w > opt.width - 4) x = std::max(4.0, (opt.width - w) / 2);
    f.draw(x, 0.8 * m.fs, opt.title, size, true);
  }
}

// Translucent white box, a line sample (with marker) per entry, then the label.
void draw_legend(cairo_t* cr, const Chart& c, const Fonts& f, const std::vector<Series>& series) {
  if (!c.legend) return;
  const Metrics m(f);
  const double bx = c.legend_x, by = c.legend_y;
  cairo_rectangle(cr, bx, by, c.legend_w, c.legend_h);
  set_color(cr, Rgb{255, 255, 255}, 0.88);
  cairo_fill(cr);
  cairo_set_line_width(cr, 1);
  cairo_set_dash(cr, nullptr, 0, 0);
  cairo_rectangle(cr, bx + 0.5, by + 0.5, c.legend_w - 1, c.legend_h - 1);
  set_color(cr, kLegendBorder);
  cairo_stroke(cr);
  const Rect box{bx, by, bx + c.legend_w, by + c.legend_h};
  for (size_t k = 0; k < c.entries.size(); ++k) {
    const auto& d = c.drawn[c.entries[k]];
    const double ry = by + m.pad + static_cast<double>(k) * m.row;
    const double y = ry + f.h() / 2;
    const double x0 = bx + m.pad, x1 = bx + m.pad + m.sample;
    stroke_style(cr, d);
    cairo_move_to(cr, x0, y);
    cairo_line_to(cr, x1, y);
    cairo_stroke(cr);
    if (d.markers) dot(cr, box, Pt{(x0 + x1) / 2, y}, std::max(3.0, d.width / 2 + 1.5));
    f.draw(x1 + m.pad, ry, series[c.entries[k]].label, f.size);
  }
}

void draw_chart(cairo_t* cr, const std::vector<Series>& series, const ChartOptions& opt) {
  const Fonts f{cr, 10.0 + 3.0 * opt.text_scale, 1.4 * (10.0 + 3.0 * opt.text_scale)};
  const Chart c = plan(series, opt, f);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  draw_axes(cr, c, f, opt);
  draw_series(cr, c);
  draw_labels(cr, c, f, opt);
  draw_legend(cr, c, f, series);
}

void check_cairo(cairo_status_t st, const char* what) {
  if (st != CAIRO_STATUS_SUCCESS)
    throw std::runtime_error(std::string("line chart: ") + what + ": " + cairo_status_to_string(st));
}

cairo_status_t append_to_string(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

// The chart drawn on an image surface (owned by the caller).
cairo_surface_t* raster(const std::vector<Series>& series, const ChartOptions& opt) {
  check_options(series, opt);
  cairo_surface_t* s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, opt.width, opt.height);
  check_cairo(cairo_surface_status(s), "image surface");
  cairo_t* cr = cairo_create(s);
  draw_chart(cr, series, opt);
  const cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  cairo_surface_flush(s);
  if (st != CAIRO_STATUS_SUCCESS) cairo_surface_destroy(s);
  check_cairo(st, "drawing");
  return s;
}

}  // namespace

Image render_line_chart(const std::vector<Series>& series, const ChartOptions& opt) {
  cairo_surface_t* s = raster(series, opt);
  Image img;
  img.width = opt.width;
  img.height = opt.height;
  img.rgb.resize(static_cast<size_t>(img.width) * static_cast<size_t>(img.height) * 3);
  const unsigned char* data = cairo_image_surface_get_data(s);
  const int stride = cairo_image_surface_get_stride(s);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      uint32_t px;  // CAIRO_FORMAT_RGB24: native-endian 0x00RRGGBB
      std::memcpy(&px, data + static_cast<size_t>(y) * static_cast<size_t>(stride) + static_cast<size_t>(x) * 4, 4);
      uint8_t* o = &img.rgb[(static_cast<size_t>(y) * static_cast<size_t>(img.width) + static_cast<size_t>(x)) * 3];
      o[0] = static_cast<uint8_t>(px >> 16);
      o[1] = static_cast<uint8_t>(px >> 8);
      o[2] = static_cast<uint8_t>(px);
    }
  cairo_surface_destroy(s);
  return img;
}

std::string encode_line_chart_png(const std::vector<Series>& series, const ChartOptions& opt) {
  cairo_surface_t* s = raster(series, opt);
  std::string png;
  const cairo_status_t st = cairo_surface_write_to_png_stream(s, append_to_string, &png);
  cairo_surface_destroy(s);
  check_cairo(st, "PNG encoding");
  return png;
}

std::string encode_line_chart_svg(const std::vector<Series>& series, const ChartOptions& opt) {
  check_options(series, opt);
  std::string svg;
  cairo_surface_t* s = cairo_svg_surface_create_for_stream(append_to_string, &svg, opt.width, opt.height);
  check_cairo(cairo_surface_status(s), "SVG surface");
  cairo_svg_surface_set_document_unit(s, CAIRO_SVG_UNIT_PX);
  cairo_t* cr = cairo_create(s);
  draw_chart(cr, series, opt);
  const cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  cairo_surface_finish(s);
  const cairo_status_t fin = cairo_surface_status(s);
  cairo_surface_destroy(s);
  check_cairo(st, "drawing");
  check_cairo(fin, "SVG encoding");
  return svg;
}

std::string svg_path_for(const std::string& png_path) {
  const std::string ext = ".png";
  if (png_path.size() > ext.size() && png_path.compare(png_path.size() - ext.size(), ext.size(), ext) == 0)
    return png_path.substr(0, png_path.size() - ext.size()) + ".svg";
  return png_path + ".svg";
}

void write_line_chart(const std::string& png_path, const std::vector<Series>& series, const ChartOptions& opt) {
  const std::string png = encode_line_chart_png(series, opt);
  const std::string svg = encode_line_chart_svg(series, opt);
  io::write_file_atomic(png_path, png.data(), png.size());
  io::write_file_atomic(svg_path_for(png_path), svg.data(), svg.size());
}

}  // namespace ttt::report
