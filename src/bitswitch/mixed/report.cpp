// Run report as one HTML page with inline SVG (no JavaScript, no network).
#include "bitswitch/mixed/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

namespace bitswitch::mixed {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

namespace {

const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
std::string palette(size_t i) { return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))]; }

// Up to ~6 round tick values covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi) {
  const double span = hi - lo;
  const double raw = span / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(std::abs(v) < 1e-12 * span ? 0 : v);
  return t;
}

}  // namespace

std::string svg_chart(const std::vector<Series>& series, const ChartOptions& o) {
  const double left = 70, right = 170, top = 30, bottom = o.x_tick_labels.empty() ? 45 : 110;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double y) { return o.log_y ? std::log10(std::max(y, 1e-300)) : y; };
  for (const auto& s : series)
    for (auto [x, y] : s.points) {
      if (o.log_y && !(y > 0)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, ty(y)), y1 = std::max(y1, ty(y));
    }
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>\n",
      o.width, o.height, o.width, o.height, left, html_escape(o.title));
  if (!std::isfinite(x0)) return svg + fmt::format("<text x=\"{}\" y=\"{}\">no data</text>\n</svg>\n", left, top + ph / 2);
  if (o.bars) x0 -= 0.5, x1 += 0.5;
  if (x1 == x0) x0 -= 1, x1 += 1;
  if (y1 == y0) y0 -= o.log_y ? 1 : std::max(1.0, std::abs(y0) * 0.1), y1 += o.log_y ? 1 : std::max(1.0, std::abs(y1) * 0.1);
  else {
    const double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
  }
  if (o.bars && !o.log_y) y0 = std::min(y0, 0.0);
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1 - (ty(y) - y0) / (y1 - y0)) * ph; };
  auto pyt = [&](double t) { return top + (1 - (t - y0) / (y1 - y0)) * ph; };  // already transformed
  // Axes and grid.
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", left, top, pw, ph);
  for (double t : nice_ticks(y0, y1)) {
    const double y = pyt(t);
    const std::string label = o.log_y ? fmt::format("1e{:g}", t) : fmt::format("{:g}", t);
    if (o.log_y && t != std::floor(t)) continue;
    svg += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
                       "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
                       left, left + pw, y, y, left - 5, y + 4, label);
  }
  if (!o.x_tick_labels.empty()) {
    for (size_t i = 0; i < o.x_tick_labels.size(); ++i) {
      const double x = px(double(i));
      svg += fmt::format("<text transform=\"translate({:.1f},{}) rotate(45)\" font-size=\"9\">{}</text>\n", x - 3,
                         top + ph + 8, html_escape(o.x_tick_labels[i]));
    }
  } else {
    for (double t : nice_ticks(x0, x1))
      svg += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>"
                         "<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:g}</text>\n",
                         px(t), px(t), top, top + ph, px(t), top + ph + 15, t);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, o.height - 5,
                     html_escape(o.x_label));
  svg += fmt::format("<text transform=\"translate(14,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n", top + ph / 2,
                     html_escape(o.y_label));
  // Data.
  const double bar_w = o.bars ? 0.7 * pw / (x1 - x0) : 0;
  for (size_t si = 0; si < series.size(); ++si) {
    const auto& s = series[si];
    const std::string color = s.color.empty() ? palette(si) : s.color;
    std::string path;
    for (auto [x, y] : s.points) {
      if (o.log_y && !(y > 0)) continue;
      if (o.bars) {
        const double yb = o.log_y ? top + ph : py(0);
        svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n",
                           px(x) - bar_w / 2, std::min(py(y), yb), bar_w, std::abs(yb - py(y)), color);
        continue;
      }
      path += fmt::format("{}{:.1f},{:.1f} ", path.empty() ? "M" : "L", px(x), py(y));
      if (s.markers) {
        if (s.marker == "square")
          svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"8\" height=\"8\" fill=\"{}\"/>\n", px(x) - 4, py(y) - 4, color);
        else
          svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n", px(x), py(y), color);
      }
    }
    if (s.line && !o.bars && !path.empty())
      svg += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", path, color);
    // Legend entry.
    const double ly = top + 10 + 16 * double(si);
    svg += fmt::format("<rect x=\"{}\" y=\"{:.1f}\" width=\"12\" height=\"12\" fill=\"{}\"/>"
                       "<text x=\"{}\" y=\"{:.1f}\">{}</text>\n",
                       left + pw + 10, ly - 10, color, left + pw + 27, ly, html_escape(s.name));
  }
  return svg + "</svg>\n";
}

namespace {

json read_json_file(const std::string& path) {
  try {
    return json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail("'", path, "': not valid JSON: ", e.what());
  }
}

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  BS_CHECK(in, "cannot read '", path, "'");
  std::vector<json> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const json::exception& e) {
      fail("'", path, "' line ", n, ": not valid JSON: ", e.what());
    }
    BS_CHECK(out.back().is_object(), "'", path, "' line ", n, ": expected a JSON object");
  }
  return out;
}

// One series per width label of `field` over the lines of metrics.jsonl (x: epoch count over phases).
std::vector<Series> metric_series(const std::vector<json>& lines, const std::string& field, const std::string& suffix) {
  std::map<std::string, Series> by;
  std::vector<std::string> order;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto it = lines[i].find(field);
    if (it == lines[i].end() || !it->is_object()) continue;
    for (const auto& [k, v] : it->items()) {
      if (!v.is_number()) continue;
      if (!by.count(k)) order.push_back(k), by[k].name = k + suffix;
      by[k].points.emplace_back(double(i + 1), v.get<double>());
    }
  }
  // The same color for a width in every chart.
  const std::map<std::string, std::string> colors{{"fp32", "#444444"}, {"w8", "#1f77b4"}, {"w7", "#17becf"},
                                                  {"w6", "#2ca02c"},   {"w5", "#bcbd22"}, {"w4", "#ff7f0e"},
                                                  {"w3", "#e377c2"},   {"w2", "#d62728"}};
  std::vector<Series> out;
  for (const auto& k : order) {
    auto s = by[k];
    if (colors.count(k)) s.color = colors.at(k);
    s.markers = s.points.size() < 30;
    out.push_back(s);
  }
  return out;
}

std::string width_color(int b) {
  switch (b) {
    case 8: return "#1a9850";
    case 7: return "#66bd63";
    case 6: return "#a6d96a";
    case 5: return "#d9ef8b";
    case 4: return "#fee08b";
    case 3: return "#fdae61";
    case 2: return "#d73027";
    default: return "#999999";
  }
}

ChartOptions chart(const std::string& title, const std::string& x_label, const std::string& y_label) {
  ChartOptions o;
  o.title = title, o.x_label = x_label, o.y_label = y_label;
  return o;
}

Series series(const std::string& name, const std::string& color) {
  Series s;
  s.name = name, s.color = color;
  return s;
}

std::string section(const std::string& title, const std::string& body) {
  return "<section><h2>" + html_escape(title) + "</h2>\n" + body + "</section>\n";
}

}  // namespace

ReportResult build_report(const ReportInputs& in) {
  BS_CHECK(fs::is_directory(in.run_dir), "report: run directory '", in.run_dir, "' does not exist");
  auto path_or = [&](const std::string& p, const char* name) { return p.empty() ? (fs::path(in.run_dir) / name).string() : p; };
  const std::string metrics_path = path_or(in.metrics, "metrics.jsonl");
  const std::string traces_path = path_or(in.traces, "traces.json");
  const std::string pareto_path = path_or(in.pareto, "pareto.json");
  ReportResult r;
  std::string body;
  auto missing = [&](const std::string& title, const std::string& path, const std::string& how) {
    r.missing.push_back(path);
    body += section(title, "<p class=\"missing\">Not available: <code>" + html_escape(path) + "</code> does not exist (" +
                               html_escape(how) + ").</p>\n");
  };

  // Training curves.
  if (fs::exists(metrics_path)) {
    const auto lines = read_jsonl(metrics_path);
    std::string phases;
    for (size_t i = 0; i < lines.size(); ++i)
      phases += fmt::format("{}{} {}", i ? ", " : "", lines[i].value("phase", "?"), lines[i].value("epoch", 0));
    auto acc = chart("Test accuracy per width", "epoch (all phases, in order)", "top-1 accuracy (%)");
    body += section("Accuracy per width per epoch",
                    svg_chart(metric_series(lines, "test_accuracy", ""), acc) +
                        "<p class=\"note\">Epochs in order: " + html_escape(phases) + ".</p>\n");
    auto tl = chart("Training loss per width", "epoch (all phases, in order)", "mean loss");
    auto vl = chart("Test loss per width", "epoch (all phases, in order)", "mean cross-entropy");
    body += section("Losses", svg_chart(metric_series(lines, "train_loss", ""), tl) +
                                  svg_chart(metric_series(lines, "test_loss", ""), vl));
    r.sections.push_back("training");
  } else {
    missing("Accuracy and losses per epoch", metrics_path, "written by `bitswitch train`");
  }

  // Hessian traces.
  if (fs::exists(traces_path)) {
    const json t = read_json_file(traces_path);
    BS_CHECK(t.contains("layers") && t["layers"].is_array(), "'", traces_path, "': field 'layers' must be a list");
    Series sens = series("sensitive (>= mean)", "#d62728"), rest = series("trace < mean", "#1f77b4");
    std::vector<std::string> names;
    double mean = 0;
    for (const auto& l : t["layers"]) mean += l.value("trace", 0.0);
    mean /= std::max<double>(1, double(t["layers"].size()));
    std::string rows;
    for (const auto& l : t["layers"]) {
      const double tr = l.value("trace", 0.0);
      (tr >= mean ? sens : rest).points.emplace_back(double(names.size()), tr);
      names.push_back(l.value("name", "?"));
      rows += fmt::format("<tr><td>{}</td><td>{}</td><td>{:.4g}</td><td>{:.2g}</td></tr>\n", html_escape(names.back()),
                          l.value("params", 0), tr, l.value("stderr", 0.0));
    }
    auto o = chart("Average Hessian trace per layer (log scale)", "", "tr(H) / #params");
    o.log_y = true;
    o.bars = true;
    o.height = 420;
    o.width = 760;
    o.x_tick_labels = names;
    body += section("Hessian traces per layer",
                    svg_chart({sens, rest}, o) +
                        fmt::format("<p class=\"note\">Hutchinson estimate at {} bits on {} images, {} probes{}.</p>\n",
                                    t.value("bits", 0), t.value("images", 0), t.value("probes", 0),
                                    t.value("converged", false) ? " (converged)" : "") +
                        "<details><summary>table</summary><table><tr><th>layer</th><th>params</th><th>average "
                        "trace</th><th>std. error</th></tr>\n" +
                        rows + "</table></details>\n");
    r.sections.push_back("traces");
  } else {
    missing("Hessian traces per layer", traces_path, "written by `bitswitch hessian`");
  }

  // Pareto front and the chosen candidate's bit map.
  if (fs::exists(pareto_path)) {
    const json p = read_json_file(pareto_path);
    BS_CHECK(p.contains("candidates") && p["candidates"].is_array() && p.contains("layers") && p["layers"].is_array(),
             "'", pareto_path, "': expected fields 'candidates' and 'layers' (write it with `bitswitch search`)");
    const std::string kind = p.contains("sweep") && p["sweep"].is_object() ? p["sweep"].value("kind", "avg-bits") : "avg-bits";
    const std::string field = kind == "bytes" ? "bytes" : kind == "bitops" ? "bitops" : "avg_bits";
    Series front = series("ILP (Pareto)", "#d62728"), ilp = series("ILP (dominated)", "#ff9896"),
           uni = series("uniform widths", "#1f77b4"), rnd = series("random placements", "#aaaaaa");
    front.markers = true;
    ilp.markers = uni.markers = rnd.markers = true;
    ilp.line = uni.line = rnd.line = false;
    uni.marker = "square";
    std::string rows;
    for (const auto& c : p["candidates"]) {
      const std::string k = c.value("kind", "");
      const std::pair<double, double> pt{c.value(field, 0.0), c.value("accuracy", 0.0)};
      if (k == "ilp") (c.value("pareto", false) ? front : ilp).points.push_back(pt);
      else if (k == "uniform") uni.points.push_back(pt);
      else rnd.points.push_back(pt);
      if (k != "random")
        rows += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3f}</td><td>{:.0f}</td><td>{:.4g}</td><td>{:.2f}</td></tr>\n",
                            c.value("index", 0), k, html_escape(c.value("budget", "")), c.value("avg_bits", 0.0),
                            c.value("bytes", 0.0), c.value("bitops", 0.0), c.value("accuracy", 0.0));
    }
    std::sort(front.points.begin(), front.points.end());
    auto o = chart("Test accuracy against " + kind, kind == "avg-bits" ? "average bits per layer" : kind,
                   "top-1 accuracy (%)");
    body += section("Pareto front against uniform widths",
                    svg_chart({front, ilp, uni, rnd}, o) +
                        fmt::format("<p class=\"note\">Objective: {}; {} test images; every candidate evaluated without "
                                    "retraining.</p>\n",
                                    html_escape(p.value("objective", "?")), p.value("test_images", 0)) +
                        "<details><summary>table</summary><table><tr><th>#</th><th>kind</th><th>budget</th><th>avg "
                        "bits</th><th>bytes</th><th>BitOPs</th><th>accuracy (%)</th></tr>\n" +
                        rows + "</table></details>\n");
    const int chosen = p.value("chosen", -1);
    if (chosen >= 0 && size_t(chosen) < p["candidates"].size()) {
      const auto& c = p["candidates"][size_t(chosen)];
      const auto& lb = c.at("layer_bits");
      std::string cells;
      const double cw = 36, ch = 28;
      size_t i = 0;
      for (const auto& l : p["layers"]) {
        const std::string name = l.value("name", "?");
        const int b = lb.value(name, 0);
        cells += fmt::format("<g><title>{} : {} bits</title><rect x=\"{:.0f}\" y=\"40\" width=\"{:.0f}\" height=\"{:.0f}\" "
                             "fill=\"{}\" stroke=\"white\"/><text x=\"{:.0f}\" y=\"58\" text-anchor=\"middle\">{}</text>"
                             "<text transform=\"translate({:.0f},76) rotate(60)\" font-size=\"9\">{}</text></g>\n",
                             html_escape(name), b, 10 + cw * double(i), cw, ch, width_color(b), 10 + cw * (double(i) + 0.5), b,
                             10 + cw * (double(i) + 0.3), html_escape(name));
        ++i;
      }
      const double w = 20 + cw * double(i) + 80;
      const std::string svg = fmt::format(
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"190\" font-family=\"sans-serif\" "
          "font-size=\"12\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"10\" y=\"20\" font-size=\"13\" "
          "font-weight=\"bold\">Candidate {} ({}): average {:.3f} bits, {:.2f}% accuracy</text>\n{}</svg>\n",
          w, chosen, html_escape(c.value("budget", "")), c.value("avg_bits", 0.0), c.value("accuracy", 0.0), cells);
      body += section("Per-layer bit map of the chosen candidate", svg);
      r.sections.push_back("bitmap");
    }
    r.sections.push_back("pareto");
  } else {
    missing("Pareto front and per-layer bit map", pareto_path, "written by `bitswitch search`");
  }

  r.html = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>bitswitch report: " + html_escape(in.run_dir) +
           "</title>\n<style>body{font-family:sans-serif;margin:20px;max-width:1000px}section{margin-bottom:28px}"
           "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
           ".missing{color:#a00}.note{color:#555;font-size:12px}svg{display:block;margin:6px 0}</style></head>\n<body>\n"
           "<h1>bitswitch run report</h1>\n<p class=\"note\">Run directory: <code>" +
           html_escape(in.run_dir) + "</code></p>\n" + body + "</body></html>\n";
  return r;
}

}  // namespace bitswitch::mixed
