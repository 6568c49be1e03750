// The run report: one self-contained HTML page with inline SVG charts (no scripts, no network)
// of a run directory's training metrics, Hessian traces and mixed-precision search.
#pragma once
#include <string>
#include <vector>

namespace bitswitch::mixed {

struct ReportInputs {
  std::string run_dir;
  std::string metrics;  // default: RUN_DIR/metrics.jsonl
  std::string traces;   // default: RUN_DIR/traces.json
  std::string pareto;   // default: RUN_DIR/pareto.json
};

struct ReportResult {
  std::string html;
  std::vector<std::string> sections;  // what was drawn
  std::vector<std::string> missing;   // input files that do not exist (their sections say so)
};

// Builds the page. Files that exist but are malformed are errors naming the file and line.
ReportResult build_report(const ReportInputs& inputs);

// ---- the SVG chart primitives, exposed for tests ----
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
  std::string color;
  bool line = true;     // connect the points
  bool markers = false; // draw a marker at each point
  std::string marker = "circle";  // "circle" or "square"
};
struct ChartOptions {
  std::string title, x_label, y_label;
  bool log_y = false;
  int width = 640, height = 320;
  std::vector<std::string> x_tick_labels;  // category labels at x = 0, 1, ... (bar charts)
  bool bars = false;                       // draw each series' points as bars (one series)
};
std::string svg_chart(const std::vector<Series>& series, const ChartOptions& options);
std::string html_escape(const std::string& s);

}  // namespace bitswitch::mixed
