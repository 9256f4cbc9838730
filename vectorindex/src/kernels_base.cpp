// The base build of kernels_impl.inc; CMakeLists.txt sets this file's -m flags.
#define VI_VW 16
#define VI_NAME "base"
#define VI_GETTER kernels_base
#include "kernels_impl.inc"
