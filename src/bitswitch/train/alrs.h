// Adaptive Learning Rate Scaling (paper Sec. 3.3 / SPEC.md Sec. 5): the learning rate of the
// scale/BN/bias group during width b's step is eta_b * lambda_t, with d = h - b and
//   eta_b = 10^(-d/2) for even d,  5 * 10^(-(d+1)/2) for odd d.
// {8,6,4,2}: 1, 0.1, 0.01, 0.001;  {4,3,2}: 1, 0.5, 0.1.
#pragma once
#include <cmath>

namespace bitswitch::train {

inline double alrs_eta(int high_bits, int bits) {
  const int d = high_bits - bits;
  if (d <= 0) return 1.0;
  if (d % 2 == 0) return std::pow(10.0, -d / 2);
  return 5.0 * std::pow(10.0, -(d + 1) / 2);
}

// Cosine schedule with optional linear warm-up, by step: base * 0.5 * (1 + cos(pi * t / T)).
inline double cosine_lr(double base, int64_t step, int64_t total, int64_t warmup) {
  if (warmup > 0 && step < warmup) return base * double(step + 1) / double(warmup);
  const double t = total > warmup ? double(step - warmup) / double(total - warmup) : 1.0;
  return base * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, t)));
}

}  // namespace bitswitch::train
