#include "bitswitch/cli/commands.h"
#include "bitswitch/util/allocator.h"

int main(int argc, char** argv) {
  bitswitch::tune_allocator_for_training();
  return bitswitch::cli::run(argc, argv);
}
