/* The driver harness's main: reads cases (a layer, the scratch words to load it with, 0 for
 * the driver's SCRATCH_WORDS, its input vectors and, for the mock bus, result words to
 * replay: the format sim/driver_bench.py writes), and for each one loads the
 * layer with the generated C driver, runs the vectors and prints the results, the counters
 * and STATUS, then clears the counters. Layers follow one another on the same hardware, as
 * they would on a chip: the engine's memories keep the previous layer's words. The bus is
 * the harness's (bus.h): a recording mock (mock_bus.c) or the Verilated AXI wrapper
 * (axi_bus.cpp). Compiled with -DTOP=<top>, -DTOP_UPPER=<TOP> and
 * -DDRIVER_HEADER='"<top>_driver.h"'; layer_io.h is generated for the engine. */
#include <stdio.h>
#include <stdlib.h>

#include DRIVER_HEADER
#include "bus.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(TOP, CAT(_, name))
#define STRUCT(name) struct CAT(TOP, CAT(_, name))

#include "layer_io.h"

static void fail(const char *what, int code)
{
    printf("ERROR %s %d %s\n", what, code, FN(driver_error)(code));
    exit(1);
}

/* One case's vectors and result words. */
static int read_vectors(FILE *in, const STRUCT(layer) *layer, long *scratch_words,
                        long *batch, int8_t **x, unsigned long **words, long *count)
{
    long i, value;
    if (fscanf(in, " scratch %ld", scratch_words) != 1 || fscanf(in, " x %ld", batch) != 1)
        return 1;
    *x = (int8_t *)malloc((size_t)(*batch * (long)layer->N + 1));
    for (i = 0; i < *batch * (long)layer->N; i++) {
        if (fscanf(in, "%ld", &value) != 1)
            return 1;
        (*x)[i] = (int8_t)value;
    }
    if (fscanf(in, " res %ld", count) != 1)
        return 1;
    *words = (unsigned long *)malloc(sizeof(unsigned long) * (size_t)(*count + 1));
    for (i = 0; i < *count; i++)
        if (fscanf(in, "%lx", &(*words)[i]) != 1)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    STRUCT(bus) bus;
    STRUCT(layer) layer;
    STRUCT(counters) counters;
    uint32_t *scratch;
    unsigned long *words;
    int8_t *x;
    long batch, i, count, results, scratch_words;
    int code;
    FILE *in;
    if (argc < 2 || (in = fopen(argv[1], "r")) == NULL) {
        fprintf(stderr, "usage: %s INPUT [bus arguments]\n", argv[0]);
        return 2;
    }
    if (harness_bus_open(&bus.read32, &bus.write32, &bus.ctx, argc - 2, argv + 2) != 0)
        return 2;
    bus.base = NULL;
    scratch = (uint32_t *)malloc(sizeof(uint32_t) * CAT(TOP_UPPER, _DRIVER_SCRATCH_WORDS));
    if ((code = FN(init)(&bus)) != 0)
        fail("init", code);
    while (read_layer(in, &layer) == 0) {
        if (read_vectors(in, &layer, &scratch_words, &batch, &x, &words, &count) != 0) {
            fprintf(stderr, "malformed input file\n");
            return 2;
        }
        harness_bus_results(bus.ctx, words, count);
        if ((code = FN(load_layer)(&bus, &layer, scratch,
                                   scratch_words > 0 ? (uint32_t)scratch_words
                                   : CAT(TOP_UPPER, _DRIVER_SCRATCH_WORDS))) != 0)
            fail("load_layer", code);
        printf("LOADED\n");
        results = batch * (long)layer.M;
        if (layer.requant) {
            int8_t *y = (int8_t *)malloc((size_t)results + 1);
            if ((code = FN(run_int8)(&bus, &layer, x, (uint32_t)batch, y)) != 0)
                fail("run_int8", code);
            printf("Y");
            for (i = 0; i < results; i++)
                printf(" %d", y[i]);
            free(y);
        } else {
            int64_t *y = (int64_t *)malloc(sizeof(int64_t) * (size_t)(results + 1));
            if ((code = FN(run_raw)(&bus, &layer, x, (uint32_t)batch, y)) != 0)
                fail("run_raw", code);
            printf("Y");
            for (i = 0; i < results; i++)
                printf(" %lld", (long long)y[i]);
            free(y);
        }
        printf("\n");
        FN(read_counters)(&bus, &counters);
        printf("COUNTERS %lu %lu %lu\n", (unsigned long)counters.cycles_busy,
               (unsigned long)counters.cycles_res_stall, (unsigned long)counters.vectors_done);
        printf("STATUS %lu\n", (unsigned long)FN(status)(&bus));
        FN(clear_counters)(&bus);
        free(x);
        free(words);
        free_layer(&layer);
    }
    fclose(in);
    harness_bus_close(bus.ctx);
    return 0;
}
