// The AXI bus of the driver harness: each read32/write32 of the driver is one AXI4-Lite
// transaction on the s_axi_ctrl_* port of the Verilated <top>_axi wrapper, which this file
// clocks (aclk, one eval per edge). The AXI-Stream ports stay idle (the driver works in CPU
// mode). harness_top.h (written by the build) includes V<top>_axi.h and defines VTOP. Prints
// "CYCLES <n>" when closed. An access that takes more than TIMEOUT cycles, or a response
// other than OKAY, stops the harness with an ERROR line.
#include <cstdio>
#include <cstdlib>

#include "verilated.h"
#include "harness_top.h"
#include "bus.h"

namespace {

const unsigned long TIMEOUT = 2000000;

struct Axi {
    VerilatedContext context;
    VTOP *top;
    unsigned long cycles;
};

// Inputs settle with aclk low, then the rising edge; ready/valid sampled before the edge.
void edge(Axi *axi)
{
    axi->top->aclk = 1;
    axi->top->eval();
    axi->top->aclk = 0;
    axi->top->eval();
    axi->cycles++;
}

void fail(const char *what, uint32_t offset)
{
    std::printf("ERROR AXI4-Lite %s at 0x%03x\n", what, (unsigned)offset);
    std::exit(1);
}

uint32_t axi_read32(void *ctx, uint32_t offset)
{
    Axi *axi = static_cast<Axi *>(ctx);
    VTOP *top = axi->top;
    unsigned long waited = 0;
    top->s_axi_ctrl_araddr = offset;
    top->s_axi_ctrl_arprot = 0;
    top->s_axi_ctrl_arvalid = 1;
    top->s_axi_ctrl_rready = 1;
    top->eval();
    while (!top->s_axi_ctrl_arready) {
        edge(axi);
        if (++waited > TIMEOUT) fail("read address timeout", offset);
    }
    edge(axi);
    top->s_axi_ctrl_arvalid = 0;
    top->eval();
    while (!top->s_axi_ctrl_rvalid) {
        edge(axi);
        if (++waited > TIMEOUT) fail("read data timeout", offset);
    }
    uint32_t data = top->s_axi_ctrl_rdata;
    if (top->s_axi_ctrl_rresp != 0) fail("read response not OKAY", offset);
    edge(axi);
    top->s_axi_ctrl_rready = 0;
    top->eval();
    return data;
}

void axi_write32(void *ctx, uint32_t offset, uint32_t value)
{
    Axi *axi = static_cast<Axi *>(ctx);
    VTOP *top = axi->top;
    unsigned long waited = 0;
    bool address = false, data = false;
    top->s_axi_ctrl_awaddr = offset;
    top->s_axi_ctrl_awprot = 0;
    top->s_axi_ctrl_awvalid = 1;
    top->s_axi_ctrl_wdata = value;
    top->s_axi_ctrl_wstrb = 0xF;
    top->s_axi_ctrl_wvalid = 1;
    top->s_axi_ctrl_bready = 1;
    top->eval();
    while (!(address && data)) {
        bool aw = top->s_axi_ctrl_awvalid && top->s_axi_ctrl_awready;
        bool w = top->s_axi_ctrl_wvalid && top->s_axi_ctrl_wready;
        edge(axi);
        if (aw) { address = true; top->s_axi_ctrl_awvalid = 0; }
        if (w) { data = true; top->s_axi_ctrl_wvalid = 0; }
        top->eval();
        if (++waited > TIMEOUT) fail("write timeout", offset);
    }
    while (!top->s_axi_ctrl_bvalid) {
        edge(axi);
        if (++waited > TIMEOUT) fail("write response timeout", offset);
    }
    if (top->s_axi_ctrl_bresp != 0) fail("write response not OKAY", offset);
    edge(axi);
    top->s_axi_ctrl_bready = 0;
    top->eval();
}

}  // namespace

extern "C" int harness_bus_open(uint32_t (**read32)(void *, uint32_t),
                                void (**write32)(void *, uint32_t, uint32_t), void **ctx,
                                int argc, char **argv)
{
    Axi *axi = new Axi;
    axi->context.commandArgs(argc, argv);
    axi->top = new VTOP(&axi->context);
    axi->cycles = 0;
    VTOP *top = axi->top;
    top->aclk = 0;
    top->aresetn = 0;
    top->s_axi_ctrl_awvalid = 0;
    top->s_axi_ctrl_wvalid = 0;
    top->s_axi_ctrl_bready = 0;
    top->s_axi_ctrl_arvalid = 0;
    top->s_axi_ctrl_rready = 0;
    top->s_axis_act_tvalid = 0;
    top->s_axis_load_tvalid = 0;
    top->m_axis_res_tready = 0;
    top->eval();
    for (int i = 0; i < 4; i++) edge(axi);
    top->aresetn = 1;
    top->eval();
    edge(axi);
    *read32 = axi_read32;
    *write32 = axi_write32;
    *ctx = axi;
    return 0;
}

extern "C" void harness_bus_results(void *ctx, const unsigned long *words, long count)
{
    (void)ctx;
    (void)words;
    (void)count;
}

extern "C" void harness_bus_close(void *ctx)
{
    Axi *axi = static_cast<Axi *>(ctx);
    std::printf("CYCLES %lu\n", axi->cycles);
    axi->top->final();
    delete axi->top;
    delete axi;
}
