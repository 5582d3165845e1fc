/* The local cluster's fake NVIDIA driver library (tests/test_gpu_module.py): built by tools/localcluster.py
 * twice, as libcuda.so.1 and as libnvidia-ml.so.1 (their real sonames), so the GPU module's
 * loader-cache search, binds and loader path are tested on a machine without a GPU.
 * FAKE_TOKEN is random per cluster: a program that prints it proves which copy it loaded. */
#include <stdio.h>
#ifndef FAKE_TOKEN
#define FAKE_TOKEN "unset"
#endif
const char *shifter_fake_driver_token(void) { return FAKE_TOKEN; }
int cuInit(unsigned int flags) { (void)flags; return 0; }
int cuDriverGetVersion(int *version) { *version = 13000; return 0; }
int nvmlInit_v2(void) { return 0; }
