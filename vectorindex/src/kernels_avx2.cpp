// The avx2 build of kernels_impl.inc; CMakeLists.txt sets this file's -m flags.
#define VI_VW 32
#define VI_NAME "avx2"
#define VI_GETTER kernels_avx2
#include "kernels_impl.inc"
