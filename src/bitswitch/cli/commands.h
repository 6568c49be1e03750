// The `bitswitch` command line: thin wrappers over the library.
#pragma once

namespace bitswitch::cli {
int run(int argc, char** argv);
}
