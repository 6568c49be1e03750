// The LibTorch API differences between 1.13 (Debian's libtorch-dev, the default build) and 2.x
// (the pip wheels of the CUDA build, docs/cuda.md), in one place. Build-level differences are in
// CMakeLists.txt: a pip LibTorch's bundled {fmt} headers, and its missing Gloo headers
// (BITSWITCH_C10D).
#pragma once
#include <torch/version.h>

#define BITSWITCH_TORCH_2 (TORCH_VERSION_MAJOR >= 2)

namespace c10d {
class Backend;
class ProcessGroup;
}  // namespace c10d

namespace bitswitch::compat {

// The class that c10d's process groups (Gloo, NCCL) derive from: LibTorch 2.x split
// c10d::ProcessGroup into a dispatcher and per-device c10d::Backend implementations.
#if BITSWITCH_TORCH_2
using ProcessGroupBase = c10d::Backend;
#else
using ProcessGroupBase = c10d::ProcessGroup;
#endif

}  // namespace bitswitch::compat
