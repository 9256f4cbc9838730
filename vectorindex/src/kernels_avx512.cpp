// The avx512 build of kernels_impl.inc; CMakeLists.txt sets this file's -m flags.
#define VI_VW 64
#define VI_NAME "avx512"
#define VI_GETTER kernels_avx512
#include "kernels_impl.inc"
