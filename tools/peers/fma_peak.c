/* The machine's f32 multiply-add issue rate, for the compute bounds in docs/BENCHMARKS.md: each
 * OpenMP thread runs 24 independent chains of 16-lane fused multiply-adds (AVX-512, all in
 * registers, no memory traffic) and the program prints the best of 5 passes of all threads
 * together, in GFLOP/s (2 FLOPs per lane per multiply-add). No GEMM can exceed this rate; how
 * close one comes is its efficiency.
 *
 * Built for a CPU with AVX512_BF16 (-march=native there), it also prints the rate of `vdpbf16ps`,
 * the instruction of `--products bf16`: each of its lanes multiplies two pairs of bfloat16 values and
 * adds both products (4 FLOPs per lane), on a second line after the f32 figure. On a CPU with AMX-BF16
 * (Sapphire Rapids and later), a third line gives the rate of `tdpbf16ps` on tiles held in the tile
 * registers (16 x 16 f32 sums of 32 bfloat16 products each: 16384 FLOPs an instruction; four
 * independent accumulators), the instruction of Orion's AMX kernel, after asking Linux for the tiles.
 *
 *   gcc -O2 -march=native -fopenmp tools/peers/fma_peak.c -o /tmp/fma_peak
 *   OMP_NUM_THREADS=2 /tmp/fma_peak    (and OMP_NUM_THREADS=1)
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#ifdef __AMX_BF16__
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

#ifdef __AMX_BF16__
/* Four accumulating tiles (tmm0-3) of `tdpbf16ps` over two pairs of operand tiles (tmm4-7), `steps`
 * rounds; returns a value read back from the accumulators. */
static float tiles_bf16(long steps) {
    struct { unsigned char palette, start_row, reserved[14]; unsigned short colsb[16]; unsigned char rows[16]; }
        config = {1, 0, {0}, {0}, {0}};
    for (int t = 0; t < 8; t++) config.colsb[t] = 64, config.rows[t] = 16;
    static __thread unsigned short operand[16 * 32] __attribute__((aligned(64)));
    static __thread float out[16 * 16] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) operand[i] = 0x3400; /* bfloat16 1/(2^23): sums stay small */
    _tile_loadconfig(&config);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, operand, 64); _tile_loadd(5, operand, 64);
    _tile_loadd(6, operand, 64); _tile_loadd(7, operand, 64);
    for (long s = 0; s < steps; s++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
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
#ifdef __AMX_BF16__
    /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): Linux grants the tiles on request. */
    if (syscall(SYS_arch_prctl, 0x1023, 18) == 0) {
        /* 4 instructions a step, 16384 FLOPs each, spread over best_rate's CHAINS per step. */
        best = best_rate(tiles_bf16, steps / 16, 4.0 * 16384 / CHAINS, &threads, &sink);
        printf("%.1f GFLOP/s bfloat16 AMX tile (tdpbf16ps) peak with %d thread(s) (checksum %g)\n", best, threads, sink);
    } else {
        printf("AMX-BF16 present but Linux refused the tile registers\n");
    }
#endif
    return 0;
}
