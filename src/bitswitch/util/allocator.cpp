#include "bitswitch/util/allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bitswitch {

void tune_allocator_for_training() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 1 << 30);  // keep blocks up to 1 GiB in the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // and do not return freed memory at every step
  mallopt(M_TOP_PAD, 64 << 20);
#endif
}

}  // namespace bitswitch
