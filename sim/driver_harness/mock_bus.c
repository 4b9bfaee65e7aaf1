/* A recording bus for the driver harness: prints every write as "W <offset> <value>" (hex),
 * answers ID, KEY and GEOMETRY with the driver's expected values, and RES_DATA reads with the
 * words listed after each case's vectors in the input file ("res <count> <words>", hex), so
 * that a test compares the load beats, act beats and decoded results with the Python Layer's. */
#include <stdlib.h>

#include DRIVER_HEADER
#include "bus.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define MACRO(name) CAT(TOP_UPPER, name)

struct mock {
    const unsigned long *words;
    long count, next;
};

static uint32_t mock_read32(void *ctx, uint32_t offset)
{
    struct mock *mock = (struct mock *)ctx;
    if (offset == MACRO(_AXI_ID))
        return MACRO(_AXI_ID_VALUE);
    if (offset == MACRO(_AXI_KEY))
        return MACRO(_AXI_KEY_VALUE);
    if (offset == MACRO(_AXI_GEOMETRY))
        return MACRO(_AXI_GEOMETRY_VALUE);
    if (offset >= MACRO(_AXI_RES_DATA)
        && offset < MACRO(_AXI_RES_DATA) + 4u * MACRO(_AXI_RES_WORDS)) {
        if (mock->next >= mock->count) {
            printf("ERROR read past the result words\n");
            exit(1);
        }
        return (uint32_t)mock->words[mock->next++];
    }
    return 0u;
}

static void mock_write32(void *ctx, uint32_t offset, uint32_t value)
{
    (void)ctx;
    printf("W %lx %lx\n", (unsigned long)offset, (unsigned long)value);
}

int harness_bus_open(uint32_t (**read32)(void *, uint32_t),
                     void (**write32)(void *, uint32_t, uint32_t), void **ctx, int argc,
                     char **argv)
{
    struct mock *mock = (struct mock *)calloc(1, sizeof(struct mock));
    (void)argc;
    (void)argv;
    *read32 = mock_read32;
    *write32 = mock_write32;
    *ctx = mock;
    return mock == NULL;
}

void harness_bus_results(void *ctx, const unsigned long *words, long count)
{
    struct mock *mock = (struct mock *)ctx;
    mock->words = words;
    mock->count = count;
    mock->next = 0;
}

void harness_bus_close(void *ctx)
{
    free(ctx);
}
