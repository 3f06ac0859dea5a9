/* The machine's memory read bandwidth, for the bounds in docs/BENCHMARKS.md: sums a 1 GiB f32
 * array with OpenMP threads (each thread reads its own contiguous part, so every byte is read once
 * per pass) and prints the best of 7 passes after a warm-up pass, in GB/s (10^9 bytes).
 *
 *   gcc -Ofast -march=native -fopenmp tools/peers/read_bandwidth.c -o /tmp/read_bandwidth
 *   OMP_NUM_THREADS=2 /tmp/read_bandwidth    (and OMP_NUM_THREADS=1)
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const size_t n = (size_t)1 << 28; /* 2^28 floats = 1 GiB */
    float *a = malloc(n * sizeof *a);
    if (!a) {
        fprintf(stderr, "cannot allocate 1 GiB\n");
        return 1;
    }
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023) * 1e-3f;
    double best = 0.0, sink = 0.0;
    for (int pass = 0; pass < 8; pass++) {
        double start = omp_get_wtime();
        float sum = 0.0f;
#pragma omp parallel for reduction(+ : sum)
        for (size_t i = 0; i < n; i++) sum += a[i];
        double seconds = omp_get_wtime() - start;
        sink += sum;
        double gbs = (double)(n * sizeof *a) / seconds / 1e9;
        if (pass > 0 && gbs > best) best = gbs;
    }
    printf("%.1f GB/s with %d thread(s) (checksum %g)\n", best, omp_get_max_threads(), sink);
    free(a);
    return 0;
}
