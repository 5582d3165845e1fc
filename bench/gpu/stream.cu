// A small STREAM-style bandwidth test (copy and triad) for issue 16's GPU benchmark.
// Written for this project (no download). Prints one line per kernel:
//   stream kernel=<copy|triad> bytes=<moved per pass> best_gbs=<best of reps> device=<name>
// and exits non-zero with one line when there is no usable GPU or the result is wrong.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    std::printf("stream error: %s: %s\n", #call, cudaGetErrorString(e_)); return 2; } } while (0)

__global__ void copy(const double *__restrict__ a, double *__restrict__ c, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        c[i] = a[i];
}

__global__ void triad(double *__restrict__ a, const double *__restrict__ b, const double *__restrict__ c,
                      double s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        a[i] = b[i] + s * c[i];
}

__global__ void fill(double *x, double v, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}

int main(int argc, char **argv) {
    size_t n = (argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (size_t)1 << 27);  // 1 GiB per array
    int reps = argc > 2 ? std::atoi(argv[2]) : 20;
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    if (count < 1) { std::printf("stream error: no CUDA device visible\n"); return 2; }
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    double *a, *b, *c;
    CHECK(cudaMalloc(&a, n * sizeof(double)));
    CHECK(cudaMalloc(&b, n * sizeof(double)));
    CHECK(cudaMalloc(&c, n * sizeof(double)));
    int threads = 256, blocks = prop.multiProcessorCount * 8;
    fill<<<blocks, threads>>>(a, 1.0, n);
    fill<<<blocks, threads>>>(b, 2.0, n);
    fill<<<blocks, threads>>>(c, 0.0, n);
    CHECK(cudaDeviceSynchronize());
    cudaEvent_t t0, t1;
    CHECK(cudaEventCreate(&t0));
    CHECK(cudaEventCreate(&t1));
    const char *names[2] = {"copy", "triad"};
    double moved[2] = {2.0 * n * sizeof(double), 3.0 * n * sizeof(double)};
    for (int k = 0; k < 2; k++) {
        float best_ms = 1e30f;
        for (int r = 0; r < reps; r++) {
            CHECK(cudaEventRecord(t0));
            if (k == 0) copy<<<blocks, threads>>>(a, c, n);
            else triad<<<blocks, threads>>>(a, b, c, 3.0, n);
            CHECK(cudaEventRecord(t1));
            CHECK(cudaEventSynchronize(t1));
            float ms;
            CHECK(cudaEventElapsedTime(&ms, t0, t1));
            if (r > 0 && ms < best_ms) best_ms = ms;  // the first pass warms up
        }
        std::printf("stream kernel=%s bytes=%.0f best_gbs=%.2f device=%s\n", names[k], moved[k],
                    moved[k] / (best_ms * 1e-3) / 1e9, prop.name);
    }
    // after copy c == a == 1, after triad a = 2 + 3*1 = 5
    double check = 0;
    CHECK(cudaMemcpy(&check, a + n / 2, sizeof(double), cudaMemcpyDeviceToHost));
    if (check != 5.0) { std::printf("stream error: wrong result %g (expected 5)\n", check); return 3; }
    std::printf("stream ok\n");
    return 0;
}
