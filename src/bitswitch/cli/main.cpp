#include "bitswitch/cli/commands.h"

int main(int argc, char** argv) { return bitswitch::cli::run(argc, argv); }
