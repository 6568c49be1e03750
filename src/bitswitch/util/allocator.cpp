// Implements allocator.h with glibc's mallopt.
#include "bitswitch/util/allocator.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc; the check below needs it

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bitswitch {

bool tune_allocator_for_training() {
#if defined(__GLIBC__)
  bool ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1;  // keep blocks up to 1 GiB in the heap
  ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && ok;  // and do not return freed memory at every step
  ok = mallopt(M_TOP_PAD, 64 << 20) == 1 && ok;
  return ok;
#else
  return false;
#endif
}

}  // namespace bitswitch
