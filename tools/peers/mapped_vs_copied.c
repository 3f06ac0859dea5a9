/* Reading a model file's f32 weights from its page-cache mapping against reading a private copy
 * of them, alternated in one process (docs/BENCHMARKS.md, night of 2026-11-27): llama2.c's run.c
 * streams its weights from an mmap of the file, Orion from a copy on anonymous 4 KiB pages, and on
 * a kernel that maps large page-cache folios with one page-table entry (`FilePmdMapped` in
 * /proc/<pid>/smaps) the mapping needs fewer TLB walks. Each round sums every float of both
 * sources with OpenMP threads (each thread a contiguous part); prints each round's GB/s
 * (10^9 bytes), then the medians and how many rounds the mapping led, and the mapping's
 * FilePmdMapped figure.
 *
 *   gcc -Ofast -march=native -fopenmp tools/peers/mapped_vs_copied.c -o /tmp/mapped_vs_copied
 *   OMP_NUM_THREADS=2 /tmp/mapped_vs_copied /tmp/peers/model.bin 9
 */
#include <fcntl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static double read_rate(const float *a, size_t n, double *sink) {
    double start = omp_get_wtime();
    float sum = 0.0f;
#pragma omp parallel for reduction(+ : sum)
    for (size_t i = 0; i < n; i++) sum += a[i];
    *sink += sum;
    return (double)(n * sizeof *a) / (omp_get_wtime() - start) / 1e9;
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void print_pmd_mapped(void) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in_file = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (strchr(line, '-') && strchr(line, '/')) in_file = strstr(line, ".bin") != NULL;
        if (in_file && strncmp(line, "FilePmdMapped:", 14) == 0) printf("mapping %s", line);
    }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [ROUNDS]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 9;
    if (rounds < 1 || rounds > 99) rounds = 9;
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 4096) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    size_t n = (size_t)st.st_size / sizeof(float);
    const float *mapped = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    float *copy = malloc(n * sizeof *copy);
    if (mapped == MAP_FAILED || !copy) {
        fprintf(stderr, "cannot map or copy %s\n", argv[1]);
        return 1;
    }
    memcpy(copy, mapped, n * sizeof *copy);
    double sink = 0.0, m[99], c[99];
    read_rate(mapped, n, &sink);
    read_rate(copy, n, &sink);
    int led = 0;
    for (int r = 0; r < rounds; r++) {
        m[r] = read_rate(mapped, n, &sink);
        c[r] = read_rate(copy, n, &sink);
        led += m[r] > c[r];
        printf("round %d: mapped %.1f GB/s, copied %.1f GB/s\n", r + 1, m[r], c[r]);
    }
    print_pmd_mapped();
    qsort(m, rounds, sizeof *m, by_value);
    qsort(c, rounds, sizeof *c, by_value);
    printf("median: mapped %.1f GB/s, copied %.1f GB/s; the mapping led %d of %d rounds (%zu MB, %d threads, checksum %g)\n",
           m[rounds / 2], c[rounds / 2], led, rounds, n * sizeof(float) / 1000000, omp_get_max_threads(), sink);
    return 0;
}
