#include "report/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "report/font.h"
#include "report/png.h"

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
// Raster canvas

constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kText{25, 25, 25};
constexpr Rgb kFrame{70, 70, 70};
constexpr Rgb kGrid{232, 232, 232};
constexpr Rgb kLegendBorder{190, 190, 190};

struct Canvas {
  Image img;

  Canvas(int w, int h) {
    img.width = w;
    img.height = h;
    img.rgb.assign(static_cast<size_t>(w) * static_cast<size_t>(h) * 3, 255);
  }
  bool inside(int x, int y) const { return x >= 0 && y >= 0 && x < img.width && y < img.height; }
  uint8_t* px(int x, int y) {
    return img.rgb.data() + (static_cast<size_t>(y) * static_cast<size_t>(img.width) + static_cast<size_t>(x)) * 3;
  }
  void set(int x, int y, Rgb c) {
    if (!inside(x, y)) return;
    uint8_t* p = px(x, y);
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void blend(int x, int y, Rgb c, double a) {
    if (!inside(x, y) || a <= 0) return;
    if (a >= 1) return set(x, y, c);
    uint8_t* p = px(x, y);
    auto mix = [a](uint8_t dst, uint8_t src) {
      return static_cast<uint8_t>(std::lround(dst + (static_cast<double>(src) - dst) * a));
    };
    p[0] = mix(p[0], c.r);
    p[1] = mix(p[1], c.g);
    p[2] = mix(p[2], c.b);
  }
  void fill(int x0, int y0, int x1, int y1, Rgb c, double a = 1) {  // [x0, x1) x [y0, y1)
    for (int y = std::max(0, y0); y < std::min(img.height, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(img.width, x1); ++x) blend(x, y, c, a);
  }
  void hline(int x0, int x1, int y, Rgb c) { fill(x0, y, x1 + 1, y + 1, c); }
  void vline(int x, int y0, int y1, Rgb c) { fill(x, y0, x + 1, y1 + 1, c); }
  void outline(int x0, int y0, int x1, int y1, Rgb c) {  // inclusive corners
    hline(x0, x1, y0, c);
    hline(x0, x1, y1, c);
    vline(x0, y0, y1, c);
    vline(x1, y0, y1, c);
  }
};

int text_width(const std::string& s, int scale) {
  return s.empty() ? 0 : (static_cast<int>(s.size()) * font::kCellWidth - 1) * scale;
}
int text_height(int scale) { return font::kGlyphHeight * scale; }

// Horizontal text; (x, y) is the top-left corner of the first glyph.
void draw_text(Canvas& cv, int x, int y, const std::string& s, int scale, Rgb c) {
  for (size_t i = 0; i < s.size(); ++i) {
    const int gx = x + static_cast<int>(i) * font::kCellWidth * scale;
    for (int col = 0; col < font::kGlyphWidth; ++col)
      for (int row = 0; row < font::kGlyphHeight; ++row)
        if (font::glyph_pixel(s[i], col, row)) cv.fill(gx + col * scale, y + row * scale, gx + (col + 1) * scale,
                                                       y + (row + 1) * scale, c);
  }
}

// Text rotated 90 degrees counter-clockwise (reads bottom to top); (x, y) is the bottom-left corner
// of the rotated block, which is text_height wide and text_width tall.
void draw_text_up(Canvas& cv, int x, int y, const std::string& s, int scale, Rgb c) {
  for (size_t i = 0; i < s.size(); ++i) {
    const int gu = static_cast<int>(i) * font::kCellWidth * scale;
    for (int col = 0; col < font::kGlyphWidth; ++col)
      for (int row = 0; row < font::kGlyphHeight; ++row)
        if (font::glyph_pixel(s[i], col, row)) {
          const int u = gu + col * scale, v = row * scale;
          cv.fill(x + v, y - u - scale, x + v + scale, y - u, c);
        }
  }
}

// ---------------------------------------------------------------------------------------------
// Anti-aliased strokes through a coverage mask: each series is rasterised into the mask (max
// coverage per pixel, so joints and overlaps do not darken) and then composited once.

struct Rect {
  int x0, y0, x1, y1;  // [x0, x1) x [y0, y1)
};

struct Mask {
  int w, h;
  std::vector<float> cov;
  int bx0, by0, bx1, by1;  // touched bounding box, [bx0, bx1) x [by0, by1)
  Mask(int w_, int h_) : w(w_), h(h_), cov(static_cast<size_t>(w_) * static_cast<size_t>(h_), 0.f) { reset_box(); }
  void reset_box() {
    bx0 = w;
    by0 = h;
    bx1 = 0;
    by1 = 0;
  }
  void put(int x, int y, float c) {
    float& m = cov[static_cast<size_t>(y) * static_cast<size_t>(w) + static_cast<size_t>(x)];
    if (c > m) m = c;
    bx0 = std::min(bx0, x);
    by0 = std::min(by0, y);
    bx1 = std::max(bx1, x + 1);
    by1 = std::max(by1, y + 1);
  }
  void composite(Canvas& cv, Rgb c) {
    for (int y = by0; y < by1; ++y)
      for (int x = bx0; x < bx1; ++x) {
        float& m = cov[static_cast<size_t>(y) * static_cast<size_t>(w) + static_cast<size_t>(x)];
        if (m > 0) {
          cv.blend(x, y, c, m);
          m = 0;
        }
      }
    reset_box();
  }
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

void coverage_at(Mask& m, const Rect& clip, int px, int py, double d, double radius) {
  if (px < clip.x0 || py < clip.y0 || px >= clip.x1 || py >= clip.y1) return;
  const double c = std::clamp(radius + 0.5 - d, 0.0, 1.0);
  if (c > 0) m.put(px, py, static_cast<float>(c));
}

// A capsule of radius r around the segment (pixel centres at i + 0.5).
void stroke_segment(Mask& m, const Rect& clip, double x0, double y0, double x1, double y1, double r) {
  const double pad = r + 2;
  if (!clip_segment(x0, y0, x1, y1, clip.x0 - pad, clip.y0 - pad, clip.x1 + pad, clip.y1 + pad)) return;
  const double dx = x1 - x0, dy = y1 - y0;
  const double len2 = dx * dx + dy * dy;
  auto dist = [&](double cx, double cy) {
    double t = len2 > 0 ? ((cx - x0) * dx + (cy - y0) * dy) / len2 : 0;
    t = std::clamp(t, 0.0, 1.0);
    const double ex = x0 + t * dx - cx, ey = y0 + t * dy - cy;
    return std::sqrt(ex * ex + ey * ey);
  };
  const double reach = r + 1.5;
  if (std::fabs(dx) >= std::fabs(dy)) {  // x-major: walk columns, a band of rows around the line
    const double half = len2 > 0 ? reach * std::sqrt(len2) / std::max(std::fabs(dx), 1e-12) : reach;
    const int c0 = static_cast<int>(std::floor(std::min(x0, x1) - reach));
    const int c1 = static_cast<int>(std::ceil(std::max(x0, x1) + reach));
    for (int px = std::max(c0, clip.x0); px <= std::min(c1, clip.x1 - 1); ++px) {
      const double cx = px + 0.5;
      const double t = dx != 0 ? std::clamp((cx - x0) / dx, 0.0, 1.0) : 0.0;
      const double ly = y0 + t * dy;
      const int r0 = static_cast<int>(std::floor(ly - half)), r1 = static_cast<int>(std::ceil(ly + half));
      for (int py = std::max(r0, clip.y0); py <= std::min(r1, clip.y1 - 1); ++py)
        coverage_at(m, clip, px, py, dist(cx, py + 0.5), r);
    }
  } else {  // y-major
    const double half = reach * std::sqrt(len2) / std::fabs(dy);
    const int r0 = static_cast<int>(std::floor(std::min(y0, y1) - reach));
    const int r1 = static_cast<int>(std::ceil(std::max(y0, y1) + reach));
    for (int py = std::max(r0, clip.y0); py <= std::min(r1, clip.y1 - 1); ++py) {
      const double cy = py + 0.5;
      const double t = std::clamp((cy - y0) / dy, 0.0, 1.0);
      const double lx = x0 + t * dx;
      const int c0 = static_cast<int>(std::floor(lx - half)), c1 = static_cast<int>(std::ceil(lx + half));
      for (int px = std::max(c0, clip.x0); px <= std::min(c1, clip.x1 - 1); ++px)
        coverage_at(m, clip, px, py, dist(px + 0.5, cy), r);
    }
  }
}

void stamp_disk(Mask& m, const Rect& clip, double cx, double cy, double r) {
  if (cx < clip.x0 - r - 2 || cy < clip.y0 - r - 2 || cx > clip.x1 + r + 2 || cy > clip.y1 + r + 2) return;
  const int x0 = static_cast<int>(std::floor(cx - r - 1)), x1 = static_cast<int>(std::ceil(cx + r + 1));
  const int y0 = static_cast<int>(std::floor(cy - r - 1)), y1 = static_cast<int>(std::ceil(cy + r + 1));
  for (int py = y0; py <= y1; ++py)
    for (int px = x0; px <= x1; ++px)
      coverage_at(m, clip, px, py, std::hypot(px + 0.5 - cx, py + 0.5 - cy), r);
}

struct Pt {
  double x, y;
};

// Strokes a polyline, solid or dashed (the dash pattern runs on across vertices).
void stroke_polyline(Mask& m, const Rect& clip, const std::vector<Pt>& pts, double r, bool dashed) {
  if (pts.size() < 2) return;
  if (!dashed) {
    for (size_t i = 0; i + 1 < pts.size(); ++i) stroke_segment(m, clip, pts[i].x, pts[i].y, pts[i + 1].x, pts[i + 1].y, r);
    return;
  }
  const double on = 4 * r + 4, off = 2 * r + 4, period = on + off;
  const double pad = r + 2;
  double phase = 0;  // arc length from the start of the current dash period, in [0, period)
  for (size_t i = 0; i + 1 < pts.size(); ++i) {
    const Pt a = pts[i], b = pts[i + 1];
    const double len = std::hypot(b.x - a.x, b.y - a.y);
    if (!(len > 0) || !std::isfinite(len)) continue;
    // Only the visible part is walked (off-screen parts may be astronomically long).
    double x0 = a.x, y0 = a.y, x1 = b.x, y1 = b.y;
    if (clip_segment(x0, y0, x1, y1, clip.x0 - pad, clip.y0 - pad, clip.x1 + pad, clip.y1 + pad)) {
      const double ux = (b.x - a.x) / len, uy = (b.y - a.y) / len;
      const double s0 = std::hypot(x0 - a.x, y0 - a.y), s1 = std::hypot(x1 - a.x, y1 - a.y);
      // Dash k covers [base + k * period, base + k * period + on) in this segment's arc length.
      const double base = s0 - std::fmod(phase + s0, period);
      for (long k = 0;; ++k) {
        const double d0 = base + static_cast<double>(k) * period, d1 = d0 + on;
        if (d0 >= s1) break;
        const double e0 = std::max(d0, s0), e1 = std::min(d1, s1);
        if (e1 > e0) stroke_segment(m, clip, a.x + ux * e0, a.y + uy * e0, a.x + ux * e1, a.y + uy * e1, r);
      }
    }
    phase = std::fmod(phase + len, period);
  }
}

// ---------------------------------------------------------------------------------------------
// Axes

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

Image render_line_chart(const std::vector<Series>& series, const ChartOptions& opt) {
  check_options(series, opt);
  const int W = opt.width, H = opt.height;
  Canvas cv(W, H);

  Axis ax, ay;
  ax.log = opt.log_x;
  ay.log = opt.log_y;

  // Drawable points decide the ranges; y only from points inside an explicit x range.
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

  // Layout. Text metrics first; the plot rectangle follows from them.
  const int ts = opt.text_scale, tick_len = 3 + 2 * ts, gap = 4 + 2 * ts;
  const int th = text_height(ts);
  int title_scale = 2 * ts;
  if (text_width(opt.title, title_scale) > W - 8) title_scale = ts;
  const int title_h = text_height(title_scale);

  std::vector<size_t> entries;  // series with a legend entry
  for (size_t i = 0; i < series.size(); ++i)
    if (!series[i].label.empty()) entries.push_back(i);
  const bool want_legend = opt.legend && !entries.empty();
  const int lpad = 4 + 4 * ts, lsample = 14 + 16 * ts, lrow = th + 3 + 4 * ts;
  int label_w = 0;
  for (size_t i : entries) label_w = std::max(label_w, text_width(series[i].label, ts));
  const int legend_w = lpad + lsample + lpad + label_w + lpad;
  const int legend_h = lpad * 2 + static_cast<int>(entries.size()) * lrow - (lrow - th);

  struct Layout {
    Rect plot{0, 0, 1, 1};
    Axis ax, ay;
    std::vector<Tick> xticks, yticks;
  };
  auto layout = [&](int extra_right) {
    Layout L;
    L.ax = ax;
    L.ay = ay;
    const int top = opt.title.empty() ? 8 + 4 * ts : 12 + title_h + 6 + 4 * ts;
    const int bottom = tick_len + gap + th + (opt.x_label.empty() ? 0 : 6 + 6 * ts + th) + 12;
    const int plot_h = std::max(10, H - top - bottom);
    L.yticks = axis_ticks(L.ay, std::clamp(plot_h / (36 + 9 * ts), 2, 10));
    int ytick_w = 0;
    for (const auto& t : L.yticks) ytick_w = std::max(ytick_w, text_width(t.label, ts));
    const int left = 12 + (opt.y_label.empty() ? 0 : th + 6 + 6 * ts) + ytick_w + gap + tick_len;
    int right = 12 + 12 * ts + extra_right;
    int plot_w = std::max(10, W - left - right);
    L.ax.p0 = left;
    L.ax.p1 = left + plot_w;
    for (int max_ticks = std::clamp(plot_w / (50 + 20 * ts), 2, 12);; --max_ticks) {
      L.xticks = axis_ticks(L.ax, max_ticks);
      bool fits = true;
      for (size_t i = 0; i + 1 < L.xticks.size(); ++i) {
        const double d = L.ax.to_px(L.xticks[i + 1].value) - L.ax.to_px(L.xticks[i].value);
        if (d < (text_width(L.xticks[i].label, ts) + text_width(L.xticks[i + 1].label, ts)) / 2.0 + 8 + 6 * ts)
          fits = false;
      }
      if (fits || max_ticks <= 2) break;
    }
    if (!L.xticks.empty() && extra_right == 0) {  // room for the last x label to overhang on the right
      const double overhang = L.ax.to_px(L.xticks.back().value) + text_width(L.xticks.back().label, ts) / 2.0 - (W - 6);
      if (overhang > 0) {
        right += static_cast<int>(std::ceil(overhang));
        plot_w = std::max(10, W - left - right);
        L.ax.p1 = left + plot_w;
      }
    }
    L.plot = Rect{left, top, left + plot_w, top + plot_h};
    L.ay.p0 = L.plot.y1;  // y grows upwards
    L.ay.p1 = L.plot.y0;
    return L;
  };

  // Series in pixel space; each run is one unbroken polyline.
  struct Drawn {
    std::vector<std::vector<Pt>> runs;
    Rgb color;
    bool dashed, markers;
    double r;
  };
  auto project = [&](const Layout& L) {
    std::vector<Drawn> drawn;
    for (size_t si = 0; si < series.size(); ++si) {
      const Series& s = series[si];
      Drawn d;
      d.color = palette_color(s.color >= 0 ? s.color : static_cast<int>(si));
      d.dashed = s.dashed || (s.color < 0 && (si / 8) % 2 == 1);
      d.markers = s.markers;
      d.r = std::clamp(std::isfinite(s.line_width) ? s.line_width : 2.0, 1.0, 12.0) / 2;
      std::vector<Pt> run;
      for (size_t i = 0; i < s.x.size(); ++i) {
        Pt p{0, 0};
        bool ok = L.ax.valid(s.x[i]) && L.ay.valid(s.y[i]);
        if (ok) {
          p = {L.ax.to_px(s.x[i]), L.ay.to_px(s.y[i])};
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
      drawn.push_back(std::move(d));
    }
    return drawn;
  };
  // How many line samples (every ~2 px) fall in or near the box.
  auto overlap = [](const std::vector<Drawn>& drawn, const Rect& plot, int x0, int y0, int w, int h) {
    long count = 0;
    for (const Drawn& d : drawn)
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
  };

  Layout L = layout(0);
  std::vector<Drawn> drawn = project(L);
  int legend_x = 0, legend_y = 0;
  if (want_legend) {
    const Rect& p = L.plot;
    const int inset = 6 + 4 * ts;
    const int lx = p.x0 + inset, rx = p.x1 - inset - legend_w, cx = (p.x0 + p.x1 - legend_w) / 2;
    const int ty = p.y0 + inset, by = p.y1 - inset - legend_h;
    const std::pair<int, int> candidates[] = {{rx, ty}, {lx, ty}, {rx, by}, {lx, by}, {cx, ty}, {cx, by}};
    long best = -1;
    for (const auto& [x0, y0] : candidates) {
      const long c = overlap(drawn, p, x0, y0, legend_w, legend_h);
      if (best < 0 || c < best) {
        best = c;
        legend_x = x0;
        legend_y = y0;
      }
    }
    const int outside_w = legend_w + 8 + 4 * ts;
    if (best > 0 && opt.legend_may_go_outside && (p.x1 - p.x0) - outside_w >= W / 2) {
      L = layout(outside_w);
      drawn = project(L);
      legend_x = L.plot.x1 + 8 + 4 * ts;
      legend_y = L.plot.y0;
    }
  }
  const Rect plot = L.plot;
  const Axis& X = L.ax;
  const Axis& Y = L.ay;
  auto tick_px = [](double p) { return static_cast<int>(std::floor(p)); };

  // Grid.
  if (opt.grid) {
    for (const auto& t : L.xticks) {
      const int x = tick_px(X.to_px(t.value));
      if (x > plot.x0 && x < plot.x1 - 1) cv.vline(x, plot.y0, plot.y1 - 1, kGrid);
    }
    for (const auto& t : L.yticks) {
      const int y = tick_px(Y.to_px(t.value));
      if (y > plot.y0 && y < plot.y1 - 1) cv.hline(plot.x0, plot.x1 - 1, y, kGrid);
    }
  }

  // Lines and markers, clipped to the plot.
  Mask mask(W, H);
  for (const Drawn& d : drawn) {
    const double marker_r = std::max(3.0, d.r + 1.5);
    for (const auto& run : d.runs) {
      stroke_polyline(mask, plot, run, d.r, d.dashed);
      if (run.size() == 1 && !d.markers) stamp_disk(mask, plot, run[0].x, run[0].y, std::max(2.5, d.r + 1));
      if (d.markers)
        for (const Pt& p : run) stamp_disk(mask, plot, p.x, p.y, marker_r);
    }
    mask.composite(cv, d.color);
  }

  // Frame, ticks, tick labels.
  cv.outline(plot.x0 - 1, plot.y0 - 1, plot.x1, plot.y1, kFrame);
  for (const auto& t : L.xticks) {
    const int x = tick_px(X.to_px(t.value));
    cv.vline(x, plot.y1 + 1, plot.y1 + tick_len, kFrame);
    draw_text(cv, x - text_width(t.label, ts) / 2, plot.y1 + tick_len + gap, t.label, ts, kText);
  }
  for (const auto& t : L.yticks) {
    const int y = tick_px(Y.to_px(t.value));
    cv.hline(plot.x0 - 1 - tick_len, plot.x0 - 2, y, kFrame);
    draw_text(cv, plot.x0 - 1 - tick_len - gap - text_width(t.label, ts), y - th / 2, t.label, ts, kText);
  }

  // Axis labels and title.
  const int plot_cx = (plot.x0 + plot.x1) / 2, plot_cy = (plot.y0 + plot.y1) / 2;
  if (!opt.x_label.empty()) {
    const int w = text_width(opt.x_label, ts);
    draw_text(cv, std::max(2, plot_cx - w / 2), plot.y1 + tick_len + gap + th + 6 + 6 * ts, opt.x_label, ts, kText);
  }
  if (!opt.y_label.empty()) {
    const int w = text_width(opt.y_label, ts);
    draw_text_up(cv, 12, std::min(H - 2, plot_cy + w / 2), opt.y_label, ts, kText);
  }
  if (!opt.title.empty()) {
    const int w = text_width(opt.title, title_scale);
    int x = plot_cx - w / 2;
    if (x < 4 || x + w > W - 4) x = std::max(4, (W - w) / 2);
    draw_text(cv, x, 12, opt.title, title_scale, kText);
  }

  // Legend: translucent white box, a line sample (with marker) per entry, then the label.
  if (want_legend) {
    const int bx = legend_x, by = legend_y;
    cv.fill(bx, by, bx + legend_w, by + legend_h, kWhite, 0.88);
    cv.outline(bx, by, bx + legend_w - 1, by + legend_h - 1, kLegendBorder);
    const Rect clip{bx + 1, by + 1, bx + legend_w - 1, by + legend_h - 1};
    for (size_t k = 0; k < entries.size(); ++k) {
      const Drawn& d = drawn[entries[k]];
      const int ry = by + lpad + static_cast<int>(k) * lrow;
      const double cy = ry + th / 2.0;  // centre row of the text
      const double sx0 = bx + lpad, sx1 = bx + lpad + lsample;
      stroke_polyline(mask, clip, {{sx0, cy}, {sx1, cy}}, d.r, d.dashed);
      if (d.markers) stamp_disk(mask, clip, (sx0 + sx1) / 2, cy, std::max(3.0, d.r + 1.5));
      mask.composite(cv, d.color);
      draw_text(cv, bx + lpad + lsample + lpad, ry, series[entries[k]].label, ts, kText);
    }
  }
  return std::move(cv.img);
}

void write_line_chart_png(const std::string& path, const std::vector<Series>& series, const ChartOptions& opt) {
  const Image img = render_line_chart(series, opt);
  write_png_rgb(path, img.rgb, img.width, img.height);
}

}  // namespace ttt::report
