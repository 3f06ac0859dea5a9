/* The machine's f32 multiply-add issue rate, for the compute bounds in docs/BENCHMARKS.md: each
 * OpenMP thread runs 24 independent chains of 16-lane fused multiply-adds (AVX-512, all in
 * registers, no memory traffic) and the program prints the best of 5 passes of all threads
 * together, in GFLOP/s (2 FLOPs per lane per multiply-add). No GEMM can exceed this rate; how
 * close one comes is its efficiency.
 *
 *   gcc -O2 -march=native -fopenmp tools/peers/fma_peak.c -o /tmp/fma_peak
 *   OMP_NUM_THREADS=2 /tmp/fma_peak    (and OMP_NUM_THREADS=1)
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define CHAINS 24

/* Runs `steps` rounds of CHAINS multiply-adds; returns a value that depends on all of them. */
static float chains(long steps) {
    __m512 acc[CHAINS];
    const __m512 scale = _mm512_set1_ps(0.999999f), shift = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long s = 0; s < steps; s++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], scale, shift);
    }
    float sum = 0.0f;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(acc[i]);
    return sum;
}

int main(void) {
    const long steps = 100000000; /* 2.4e9 multiply-adds of 16 lanes per thread and pass */
    double best = 0.0, sink = 0.0;
    int threads = 1;
    for (int pass = 0; pass < 6; pass++) {
        double start = omp_get_wtime();
        float total = 0.0f;
#pragma omp parallel reduction(+ : total)
        {
            total += chains(steps);
#pragma omp single
            threads = omp_get_num_threads();
        }
        double seconds = omp_get_wtime() - start;
        sink += total;
        double gflops = (double)threads * steps * CHAINS * 16 * 2 / seconds / 1e9;
        if (pass > 0 && gflops > best) best = gflops;
    }
    printf("%.1f GFLOP/s f32 multiply-add peak with %d thread(s) (checksum %g)\n", best, threads, sink);
    return 0;
}
