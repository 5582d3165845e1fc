/* The local cluster's fake nvidia-smi: linked against libnvidia-ml.so.1 (found through the
 * loader's path, as the real tool), it lists the GPU device files it can see. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
const char *shifter_fake_driver_token(void);
int nvmlInit_v2(void);
int main(void) {
    if (nvmlInit_v2() != 0) return 1;
    printf("NVIDIA-SMI fake (driver token %s)\n", shifter_fake_driver_token());
    DIR *dev = opendir("/dev");
    struct dirent *e;
    while (dev && (e = readdir(dev)))
        if (!strncmp(e->d_name, "nvidia", 6) && e->d_name[6] >= '0' && e->d_name[6] <= '9')
            printf("GPU %s: Fake GPU (/dev/%s)\n", e->d_name + 6, e->d_name);
    if (dev) closedir(dev);
    return 0;
}
