// Line-chart renderer (src/report): ticks, the drawing (pixels through Cairo) and the PNG and SVG
// files, read back with Cairo's PNG reader and checked as SVG documents.
//
// Developer check: `ttt_tests --gtest_also_run_disabled_tests --gtest_filter='*PlotSample*'`
// writes sample charts to $TTT_PLOT_SAMPLE_DIR (default: /tmp/ttt_plot_samples) to look at.
#include <gtest/gtest.h>
#include <unistd.h>
#include <cairo.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "report/plot.h"

namespace {

namespace fs = std::filesystem;
using ttt::report::ChartOptions;
using ttt::report::Image;
using ttt::report::LogBase;
using ttt::report::Rgb;
using ttt::report::Series;

fs::path test_dir() {
  static int counter = 0;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path p = fs::path(::testing::TempDir()) /
               ("ttt_plot_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name() + "_" +
                std::to_string(counter++));
  fs::create_directories(p);
  return p;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Reads a PNG file back with Cairo's own decoder (an independent path from the encoder's stream
// writer): size and pixels as RGB.
struct Decoded {
  bool ok = false;
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

Decoded decode_png(const fs::path& path) {
  Decoded d;
  const auto bytes = read_bytes(path);
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  EXPECT_GE(bytes.size(), 8u);
  if (bytes.size() < 8 || std::memcmp(bytes.data(), sig, 8) != 0) {
    ADD_FAILURE() << path << ": no PNG signature";
    return d;
  }
  cairo_surface_t* s = cairo_image_surface_create_from_png(path.c_str());
  if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
    ADD_FAILURE() << path << ": " << cairo_status_to_string(cairo_surface_status(s));
    cairo_surface_destroy(s);
    return d;
  }
  d.ok = true;
  d.width = cairo_image_surface_get_width(s);
  d.height = cairo_image_surface_get_height(s);
  const int stride = cairo_image_surface_get_stride(s);
  const unsigned char* data = cairo_image_surface_get_data(s);
  for (int y = 0; y < d.height; ++y)
    for (int x = 0; x < d.width; ++x) {
      uint32_t px;
      std::memcpy(&px, data + static_cast<size_t>(y) * stride + static_cast<size_t>(x) * 4, 4);
      d.rgb.push_back(static_cast<uint8_t>(px >> 16));
      d.rgb.push_back(static_cast<uint8_t>(px >> 8));
      d.rgb.push_back(static_cast<uint8_t>(px));
    }
  cairo_surface_destroy(s);
  return d;
}

std::string read_text(const fs::path& p) {
  const auto b = read_bytes(p);
  return std::string(b.begin(), b.end());
}

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + what.size())) ++n;
  return n;
}

// Checks an SVG document as written by the chart: an XML prolog, one <svg> root of the chart's
// size in pixels, balanced <g> groups, and the whole document closed.
void expect_svg(const std::string& svg, int width, int height) {
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u) << "no XML prolog";
  const size_t root = svg.find("<svg");
  ASSERT_NE(root, std::string::npos) << "no <svg> root";
  const std::string head = svg.substr(root, svg.find('>', root) - root);
  EXPECT_NE(head.find("width=\"" + std::to_string(width) + "px\""), std::string::npos) << head;
  EXPECT_NE(head.find("height=\"" + std::to_string(height) + "px\""), std::string::npos) << head;
  EXPECT_EQ(count_of(svg, "<svg"), 1u);
  EXPECT_EQ(count_of(svg, "<g ") + count_of(svg, "<g>"), count_of(svg, "</g>")) << "unbalanced groups";
  size_t end = svg.find_last_not_of(" \n");
  ASSERT_NE(end, std::string::npos);
  EXPECT_EQ(svg.substr(end + 1 - 6, 6), "</svg>") << "document not closed";
}

// Cairo writes a stroke colour as rgb(R%,G%,B%) with six decimals.
std::string svg_color(Rgb c) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "rgb(%.6f%%,%.6f%%,%.6f%%)", c.r * 100 / 255.0, c.g * 100 / 255.0, c.b * 100 / 255.0);
  std::string s = buf;
  // Cairo trims trailing zeros ("0%" for zero, "100%" for full).
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t pct = s.find('%', i);
    if (pct == std::string::npos) {
      out += s.substr(i);
      break;
    }
    size_t start = s.find_last_of("(,", pct) + 1;
    out += s.substr(i, start - i);
    std::string num = s.substr(start, pct - start);
    if (num.find('.') != std::string::npos) {
      while (!num.empty() && num.back() == '0') num.pop_back();
      if (!num.empty() && num.back() == '.') num.pop_back();
    }
    out += num + "%";
    i = pct + 1;
  }
  return out;
}

bool is_white(Rgb c) { return c.r == 255 && c.g == 255 && c.b == 255; }

// How many pixels of the box [x0, x1) x [y0, y1) are close to `c`.
int count_near(const Image& img, int x0, int y0, int x1, int y1, Rgb c, int tol = 40) {
  int n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      const Rgb p = img.at(x, y);
      if (std::abs(p.r - c.r) + std::abs(p.g - c.g) + std::abs(p.b - c.b) <= tol) ++n;
    }
  return n;
}

std::vector<std::string> labels_of(const std::vector<ttt::report::Tick>& ticks) {
  std::vector<std::string> out;
  for (const auto& t : ticks) out.push_back(t.label);
  return out;
}

std::vector<Series> loss_vs_context() {
  const std::vector<double> ctx = {1024, 2048, 4096, 8192, 16384, 32768, 65536};
  return {
      Series{"full attention", ctx, {3.41, 3.22, 3.08, 2.97, 2.90, 2.86, 2.84}},
      Series{"sliding window 8K", ctx, {3.41, 3.22, 3.09, 3.02, 3.00, 2.99, 2.99}},
      Series{"TTT-E2E", ctx, {3.40, 3.20, 3.05, 2.95, 2.88, 2.83, 2.80}},
  };
}

// ------------------------------------------------------------------------------------------------
// Ticks

TEST(PlotTicks, Log2ContextLengths) {
  const auto t = ttt::report::log_ticks(1024, 65536, LogBase::Auto);
  EXPECT_EQ(labels_of(t), (std::vector<std::string>{"1K", "2K", "4K", "8K", "16K", "32K", "64K"}));
  ASSERT_EQ(t.size(), 7u);
  EXPECT_EQ(t.front().value, 1024);
  EXPECT_EQ(t.back().value, 65536);
  EXPECT_EQ(labels_of(ttt::report::log_ticks(1024, 65536, LogBase::Two)), labels_of(t));
  // A slightly wider range (the chart's margin) keeps the same ticks.
  EXPECT_EQ(labels_of(ttt::report::log_ticks(900, 75000, LogBase::Auto)), labels_of(t));
  // Too many powers: thinned to a stride of 2.
  EXPECT_EQ(labels_of(ttt::report::log_ticks(1024, 1048576, LogBase::Two, 6)),
            (std::vector<std::string>{"1K", "4K", "16K", "64K", "256K", "1M"}));
}

TEST(PlotTicks, Log10AndLinear) {
  EXPECT_EQ(labels_of(ttt::report::log_ticks(0.5, 5000, LogBase::Ten)),
            (std::vector<std::string>{"1", "10", "100", "1000"}));
  EXPECT_EQ(labels_of(ttt::report::log_ticks(0.15, 30, LogBase::Auto)),  // ratio 200: base 2
            (std::vector<std::string>{"0.25", "0.5", "1", "2", "4", "8", "16"}));
  EXPECT_EQ(labels_of(ttt::report::log_ticks(1.5, 60, LogBase::Ten)),  // one decade: 1-2-5 fill-in
            (std::vector<std::string>{"2", "5", "10", "20", "50"}));
  EXPECT_EQ(labels_of(ttt::report::linear_ticks(0, 10, 6)), (std::vector<std::string>{"0", "2", "4", "6", "8", "10"}));
  EXPECT_EQ(labels_of(ttt::report::linear_ticks(2.71, 3.43, 8)),
            (std::vector<std::string>{"2.8", "2.9", "3.0", "3.1", "3.2", "3.3", "3.4"}));
  EXPECT_EQ(labels_of(ttt::report::linear_ticks(-0.05, 0.05, 5)),
            (std::vector<std::string>{"-0.04", "-0.02", "0.00", "0.02", "0.04"}));
  EXPECT_EQ(labels_of(ttt::report::linear_ticks(0, 20000, 5)),
            (std::vector<std::string>{"0", "5K", "10K", "15K", "20K"}));
  EXPECT_THROW(ttt::report::linear_ticks(1, 1), std::invalid_argument);
  EXPECT_THROW(ttt::report::log_ticks(0, 10), std::invalid_argument);
}

// ------------------------------------------------------------------------------------------------
// Charts

TEST(Plot, WritesValidPngWithLinesAndLegend) {
  const fs::path dir = test_dir();
  const fs::path path = dir / "chart.png";
  ChartOptions opt;
  opt.title = "Loss vs context";
  opt.x_label = "context length (tokens)";
  opt.y_label = "loss";
  opt.log_x = true;
  const auto series = loss_vs_context();
  ttt::report::write_line_chart(path.string(), series, opt);

  const Decoded d = decode_png(path);
  ASSERT_TRUE(d.ok);
  ASSERT_EQ(d.width, opt.width);
  ASSERT_EQ(d.height, opt.height);
  const Image img = ttt::report::render_line_chart(series, opt);
  EXPECT_EQ(d.rgb, img.rgb) << "the PNG holds exactly the rendered pixels";

  // The SVG next to it: a whole document of the same size, each series stroked in its colour, the
  // text present as glyphs (at least one per distinct character of the title and labels).
  ASSERT_TRUE(fs::exists(dir / "chart.svg"));
  const std::string svg = read_text(dir / "chart.svg");
  expect_svg(svg, opt.width, opt.height);
  for (int i = 0; i < 3; ++i) {
    const std::string stroke = "stroke:" + svg_color(ttt::report::palette_color(i));
    EXPECT_NE(svg.find(stroke), std::string::npos) << "series " << i << ": no " << stroke;
  }
  EXPECT_GE(count_of(svg, "<symbol"), 20u) << "glyphs of the labels";

  // Background: corners and the margin are white.
  for (auto [x, y] : {std::pair{0, 0}, {opt.width - 1, 0}, {0, opt.height - 1}, {opt.width - 1, opt.height - 1}})
    EXPECT_TRUE(is_white(img.at(x, y))) << x << "," << y;
  // Each series' colour shows up in the plot area (lines) and in the legend sample.
  for (int i = 0; i < 3; ++i) {
    const Rgb c = ttt::report::palette_color(i);
    EXPECT_GT(count_near(img, 0, 0, img.width, img.height, c, 12), 300) << "series " << i;
  }
  // The lines start at the left edge of the data: around x = 1K there must be the colour of the
  // last-drawn (top-most) series, in a narrow band of columns just right of the left axis.
  int green_left = 0;
  for (int x = 60; x < 160; ++x) green_left += count_near(img, x, 40, x + 1, img.height - 60, ttt::report::palette_color(2), 12);
  EXPECT_GT(green_left, 20) << "the top-most (last) line near x = 1K";
  // Title text near the top centre (dark pixels).
  EXPECT_GT(count_near(img, 200, 5, 700, 45, Rgb{25, 25, 25}, 30), 100);
  // Not everything is drawn: most pixels stay white.
  const int white = count_near(img, 0, 0, img.width, img.height, Rgb{255, 255, 255}, 0);
  EXPECT_GT(white, img.width * img.height * 7 / 10);
  fs::remove_all(dir);
}

TEST(Plot, LegendBoxPresent) {
  ChartOptions opt;
  opt.legend = true;
  const auto series = loss_vs_context();
  const Image with = ttt::report::render_line_chart(series, opt);
  opt.legend = false;
  const Image without = ttt::report::render_line_chart(series, opt);
  // The legend adds its border colour and the label text.
  // (Anti-aliased edges may hit the border grey by chance in a few pixels.)
  EXPECT_GT(count_near(with, 0, 0, with.width, with.height, Rgb{190, 190, 190}, 0), 200);
  EXPECT_LT(count_near(without, 0, 0, without.width, without.height, Rgb{190, 190, 190}, 0), 20);
  EXPECT_GT(count_near(with, 0, 0, with.width, with.height, Rgb{25, 25, 25}, 120),
            count_near(without, 0, 0, without.width, without.height, Rgb{25, 25, 25}, 120) + 200);
}

TEST(Plot, HandlesGapsEmptySinglePointAndConstantSeries) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  ChartOptions opt;
  opt.title = "edge cases";
  std::vector<Series> s = {
      Series{"gappy", {0, 1, 2, 3, 4, 5}, {1, 2, nan, 2, inf, 1}},
      Series{"empty", {}, {}},
      Series{"single", {2.5}, {1.5}},
  };
  Image img;
  ASSERT_NO_THROW(img = ttt::report::render_line_chart(s, opt));
  EXPECT_GT(count_near(img, 0, 0, img.width, img.height, ttt::report::palette_color(0), 12), 100);
  EXPECT_GT(count_near(img, 0, 0, img.width, img.height, ttt::report::palette_color(2), 12), 10) << "single point drawn";

  // Constant series, all-empty input, all-NaN input, log axes: all render.
  EXPECT_NO_THROW(ttt::report::render_line_chart({Series{"flat", {1, 2, 3}, {5, 5, 5}}}, opt));
  EXPECT_NO_THROW(ttt::report::render_line_chart({Series{"zero", {1, 2, 3}, {0, 0, 0}}}, opt));
  EXPECT_NO_THROW(ttt::report::render_line_chart({}, opt));
  EXPECT_NO_THROW(ttt::report::render_line_chart({Series{"nan", {nan, 1}, {1, nan}}}, opt));
  opt.log_x = opt.log_y = true;
  EXPECT_NO_THROW(ttt::report::render_line_chart({Series{"neg", {-1, 0, 1, 10}, {1, 2, 0, 3}}}, opt));
  EXPECT_NO_THROW(ttt::report::render_line_chart({Series{"one", {1}, {1}}}, opt));
  // A constant series is drawn mid-plot: find its colour in the middle rows.
  opt.log_x = opt.log_y = false;
  const Image flat = ttt::report::render_line_chart({Series{"", {1, 2, 3}, {5, 5, 5}}}, opt);
  EXPECT_GT(count_near(flat, 0, flat.height / 3, flat.width, 2 * flat.height / 3, ttt::report::palette_color(0), 12), 300);
}

TEST(Plot, ExplicitRangesAndStylesRender) {
  ChartOptions opt;
  opt.y_min = 0;
  opt.y_max = 4;
  opt.x_min = 2000;
  auto s = loss_vs_context();
  s[0].dashed = true;
  s[1].markers = true;
  s[2].line_width = 3;
  std::vector<Series> many;
  for (int i = 0; i < 12; ++i) {
    std::string label = "s";
    label += std::to_string(i);
    many.push_back(Series{label, {0, 1}, {0.0 + i, 1.0 + i}});
  }
  EXPECT_NO_THROW(ttt::report::render_line_chart(s, opt));
  EXPECT_NO_THROW(ttt::report::render_line_chart(many, ChartOptions{}));
  // Data far outside the range is clipped, not drawn across the margins.
  ChartOptions clipped;
  clipped.y_min = 0;
  clipped.y_max = 3;
  const Image img = ttt::report::render_line_chart({Series{"big", {0, 1, 2}, {-1e300, 1e300, 2}}}, clipped);
  EXPECT_TRUE(is_white(img.at(img.width - 3, img.height / 2)));
}

// n overlapping sine waves over the whole plot, labelled "series i".
std::vector<Series> wavy_series(int n) {
  std::vector<Series> many;
  for (int i = 0; i < n; ++i) {
    Series s;
    s.label = std::string("series ") + std::to_string(i);
    for (int k = 0; k < 50; ++k) {
      s.x.push_back(k);
      s.y.push_back(i + std::sin(k * 0.2 + i));
    }
    many.push_back(s);
  }
  return many;
}

TEST(Plot, LegendMovesOutsideWhenEveryCornerIsBusy) {
  // Ten wavy series cover the whole plot: the legend goes to the right of the plot frame, so the
  // right margin holds legend text (dark pixels) and its border.
  const std::vector<Series> many = wavy_series(10);
  ChartOptions opt;
  const Image img = ttt::report::render_line_chart(many, opt);
  const int right_strip = count_near(img, img.width * 4 / 5, 0, img.width, img.height, Rgb{190, 190, 190}, 0);
  EXPECT_GT(right_strip, 100);
  opt.legend_may_go_outside = false;
  const Image inside = ttt::report::render_line_chart(many, opt);
  EXPECT_EQ(count_near(inside, inside.width - 20, 0, inside.width, inside.height, Rgb{190, 190, 190}, 0), 0);
}

TEST(Plot, BadInputThrowsInvalidArgument) {
  const auto s = loss_vs_context();
  auto message_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const std::invalid_argument& e) {
      return e.what();
    } catch (...) {
      return "<wrong exception type>";
    }
    return "<no exception>";
  };
  ChartOptions small;
  small.width = 50;
  EXPECT_NE(message_of([&] { ttt::report::render_line_chart(s, small); }).find("too small"), std::string::npos);
  small.width = 900;
  small.height = 10;
  EXPECT_NE(message_of([&] { ttt::report::render_line_chart(s, small); }).find("too small"), std::string::npos);

  const std::vector<Series> mismatched = {Series{"bad", {1, 2, 3}, {1, 2}}};
  const std::string msg = message_of([&] { ttt::report::write_line_chart("/tmp/never.png", mismatched, {}); });
  EXPECT_NE(msg.find("x has 3 values but y has 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad"), std::string::npos) << msg;

  ChartOptions empty_range;
  empty_range.x_min = 5;
  empty_range.x_max = 5;
  EXPECT_NE(message_of([&] { ttt::report::render_line_chart(s, empty_range); }).find("range is empty"),
            std::string::npos);
  ChartOptions log_zero;
  log_zero.log_y = true;
  log_zero.y_min = 0;
  EXPECT_NE(message_of([&] { ttt::report::render_line_chart(s, log_zero); }).find("positive"), std::string::npos);
  ChartOptions nan_bound;
  nan_bound.y_max = std::nan("");
  EXPECT_NE(message_of([&] { ttt::report::render_line_chart(s, nan_bound); }).find("finite"), std::string::npos);
  ChartOptions big_text;
  big_text.text_scale = 9;
  EXPECT_NE(message_of([&] { ttt::report::render_line_chart(s, big_text); }).find("text_scale"), std::string::npos);
}

TEST(Plot, UnwritablePathThrowsAndLeavesNoTempFile) {
  const fs::path dir = test_dir();
  const auto s = loss_vs_context();
  // Missing directory.
  EXPECT_THROW(ttt::report::write_line_chart((dir / "no_such_dir" / "x.png").string(), s, {}), std::runtime_error);
  // Target is a non-empty directory: the temporary file is written, the rename fails.
  fs::create_directories(dir / "occupied" / "inner");
  EXPECT_THROW(ttt::report::write_line_chart((dir / "occupied").string(), s, {}), std::runtime_error);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, (std::vector<std::string>{"occupied"}));
  // An existing chart is replaced whole.
  const fs::path ok = dir / "ok.png";
  { std::ofstream(ok) << "old"; }
  ttt::report::write_line_chart(ok.string(), s, {});
  EXPECT_EQ(decode_png(ok).width, 900);
  expect_svg(read_text(dir / "ok.svg"), 900, 560);
  fs::remove_all(dir);
}

// Writes sample charts for a person to look at (disabled: run with --gtest_also_run_disabled_tests).
TEST(PlotSample, DISABLED_WriteSamples) {
  const char* env = std::getenv("TTT_PLOT_SAMPLE_DIR");
  const fs::path dir = env && *env ? fs::path(env) : fs::path("/tmp/ttt_plot_samples");
  fs::create_directories(dir);

  ChartOptions opt;
  opt.title = "Loss vs context length";
  opt.x_label = "context length (tokens)";
  opt.y_label = "loss (nats/token)";
  opt.log_x = true;
  ttt::report::write_line_chart((dir / "loss_vs_context.png").string(), loss_vs_context(), opt);

  const std::vector<double> ctx = {1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
  ChartOptions lat;
  lat.title = "Prefill latency vs context length";
  lat.x_label = "context length (tokens)";
  lat.y_label = "latency (ms)";
  lat.log_x = lat.log_y = true;
  std::vector<Series> ls = {
      Series{"full attention", ctx, {4.1, 9.0, 21, 55, 160, 520, 1900, 7300}, -1, false, true},
      Series{"TTT-E2E", ctx, {5.0, 9.8, 19.5, 39, 78, 156, 311, 622}, -1, false, true},
      Series{"sliding window", ctx, {4.5, 9.1, 18.5, 37, 75, 150, 300, 601}, -1, true, true},
  };
  ttt::report::write_line_chart((dir / "latency_vs_context.png").string(), ls, lat);

  ChartOptions tr;
  tr.title = "Training loss";
  tr.x_label = "step";
  tr.y_label = "loss";
  std::vector<double> steps, loss, val_steps, val;
  for (int i = 0; i <= 20000; i += 20) {
    steps.push_back(i);
    loss.push_back(2.6 + 8.2 * std::exp(-i / 1500.0) + 0.08 * std::sin(i * 0.37) + (i > 9000 && i < 9400 ? NAN : 0));
    if (i % 1000 == 0) {
      val_steps.push_back(i);
      val.push_back(2.7 + 8.0 * std::exp(-i / 1500.0));
    }
  }
  ttt::report::write_line_chart((dir / "training_loss.png").string(),
                                    {Series{"train", steps, loss}, Series{"validation", val_steps, val, -1, false, true}},
                                    tr);

  const std::vector<Series> many = wavy_series(10);
  ChartOptions mo;
  mo.title = "Ten series; glyphs: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ abcdefghijklmnopqrstuvwxyz";
  mo.x_label = "ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789";
  mo.y_label = "value";
  ttt::report::write_line_chart((dir / "many_series.png").string(), many, mo);

  ChartOptions eo;
  eo.title = "Edge cases";
  eo.width = 320;
  eo.height = 200;
  ttt::report::write_line_chart((dir / "edge_small.png").string(),
                                    {Series{"flat", {1, 2, 3}, {5, 5, 5}}, Series{"single", {2}, {5.2}}, Series{"empty", {}, {}}},
                                    eo);
  ChartOptions none;
  none.log_y = true;
  none.title = "No data";
  ttt::report::write_line_chart((dir / "empty.png").string(), {Series{"nothing yet", {}, {}}}, none);

  mo.text_scale = 3;
  mo.width = 1800;
  mo.height = 1100;
  mo.title = "Glyphs !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  mo.x_label = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789";
  ttt::report::write_line_chart((dir / "text_scale3.png").string(), many, mo);
  std::cout << "sample charts in " << dir << "\n";
}

}  // namespace
