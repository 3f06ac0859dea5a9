/* The machine's f32 multiply-add issue rate, for the compute bounds in docs/BENCHMARKS.md: each
 * OpenMP thread runs 24 independent chains of 16-lane fused multiply-adds (AVX-512, all in
 * registers, no memory traffic) and the program prints the best of 5 passes of all threads
 * together, in GFLOP/s (2 FLOPs per lane per multiply-add). No GEMM can exceed this rate; how
 * close one comes is its efficiency.
 *
 * Built for a CPU with AVX512_BF16 (-march=native there), it also prints the rate of `vdpbf16ps`,
 * the instruction of `--products bf16`: each of its lanes multiplies two pairs of bfloat16 values and
 * adds both products (4 FLOPs per lane), on a second line after the f32 figure.
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

#ifdef __AVX512BF16__
/* As `chains`, with `vdpbf16ps` (32 bfloat16 pairs per instruction). */
static float chains_bf16(long steps) {
    __m512 acc[CHAINS];
    const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long s = 0; s < steps; s++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    }
    float sum = 0.0f;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(acc[i]);
    return sum;
}
#endif

/* The best of passes 2..6 of `run` on every thread, in GFLOP/s (`flops` per chain step). */
static double best_rate(float (*run)(long), long steps, double flops, int *threads, double *sink) {
    double best = 0.0;
    for (int pass = 0; pass < 6; pass++) {
        double start = omp_get_wtime();
        float total = 0.0f;
#pragma omp parallel reduction(+ : total)
        {
            total += run(steps);
#pragma omp single
            *threads = omp_get_num_threads();
        }
        double seconds = omp_get_wtime() - start;
        *sink += total;
        double gflops = (double)*threads * steps * CHAINS * flops / seconds / 1e9;
        if (pass > 0 && gflops > best) best = gflops;
    }
    return best;
}

int main(void) {
    const long steps = 100000000; /* 2.4e9 multiply-adds of 16 lanes per thread and pass */
    double sink = 0.0;
    int threads = 1;
    double best = best_rate(chains, steps, 16 * 2, &threads, &sink);
    printf("%.1f GFLOP/s f32 multiply-add peak with %d thread(s) (checksum %g)\n", best, threads, sink);
#ifdef __AVX512BF16__
    best = best_rate(chains_bf16, steps, 32 * 2, &threads, &sink);
    printf("%.1f GFLOP/s bfloat16 pair (vdpbf16ps) peak with %d thread(s) (checksum %g)\n", best, threads, sink);
#endif
    return 0;
}
