/* The bus of the driver harness: read32/write32 for the driver's struct <top>_bus. */
#ifndef SECATEUR_HARNESS_BUS_H
#define SECATEUR_HARNESS_BUS_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Open the bus (argc, argv: the harness's arguments after the input file). Returns 0 on
 * success. */
int harness_bus_open(uint32_t (**read32)(void *, uint32_t),
                     void (**write32)(void *, uint32_t, uint32_t), void **ctx, int argc,
                     char **argv);
/* The next case's result words (the mock bus replays them on RES_DATA reads; the AXI bus
 * reads the RTL's). */
void harness_bus_results(void *ctx, const unsigned long *words, long count);
void harness_bus_close(void *ctx);

#ifdef __cplusplus
}
#endif

#endif
