// The one generated header ExecuTorch's portable c10 headers include that the executorch wheel does not
// ship (the same settings as a shared-library build; nothing here links c10 itself).
#ifndef C10_MACROS_CMAKE_MACROS_H_
#define C10_MACROS_CMAKE_MACROS_H_
#define C10_BUILD_SHARED_LIBS
#endif
