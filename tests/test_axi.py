"""The AXI4 wrapper (:mod:`secateur.hdl.axi`): its register map description, its refusals, its
parts in Amaranth's simulator, the files ``secateur rtl`` and ``export`` write for it, and
every engine behind it under cocotbext-axi (:mod:`secateur.verif.tb_axi`)."""

import json
import re
import zlib

import pytest
from amaranth.sim import Simulator
from conftest import in_make_test

from secateur.gen.registry import engine_names, make_engine
from secateur.gen.export import export_bundle
from secateur.gen.rtl import axi_key, verilog_text, write_rtl
from secateur.hdl import axi
from secateur.hdl.engines.dense import DenseEngine
from secateur.verif.launch import run_testbench

#: One small configuration per engine (ACT_WORDS 2 on dense, RES_WORDS 2 everywhere).
SIM_CONFIGS = {
    "dense": dict(pe=2, fan_in=5, max_rows=5, max_cols=12),
    "ternary": dict(pe=1, fan_in=4, max_rows=5, max_cols=13),
    "lfsr": dict(pe=1, max_rows=5, max_cols=13, weight_depth=65, act_lanes=1),
    "permdiag": dict(pe=1, mults=2, max_rows=8, max_cols=12, min_p=2, max_p=4),
    "cim": dict(pe=2, macro_rows=12, macro_cols=24, adcs=1, rows=2, adc_bits=2, act_lanes=3),
}


def wrapped_verilog(engine, key):
    """The engine's Verilog and its wrapper's, the simulator's one source."""
    return verilog_text(engine) + axi.verilog_text(axi.AXIWrapper(engine, key=key))


#: make test runs dense (a warm run takes seconds; each other engine's cold build and run costs
#: 30-60 s of CPU, beyond make test's budget); make regress runs every engine.
IN_MAKE_TEST = {list(SIM_CONFIGS).index("dense")}


@pytest.mark.sim
@pytest.mark.parametrize("name", in_make_test(list(SIM_CONFIGS), IN_MAKE_TEST),
                         ids=list(SIM_CONFIGS))
def test_engine_behind_axi(name, seed):
    engine = make_engine(name, **SIM_CONFIGS[name])
    # A key of the configuration, not of the sources: the build stays cached across edits of
    # unrelated files (the key written by secateur rtl is tested without a simulator).
    key = zlib.crc32(json.dumps([name, engine.params]).encode())
    run_testbench(verilog=wrapped_verilog(engine, key), toplevel=f"{engine.top}_axi",
                  test_module="secateur.verif.tb_axi",
                  config={"engine": name, "params": engine.params, "seed": seed, "key": key,
                          "pause": 0.3, "vectors": 3},
                  seed=seed)


# The register map: one description, as the contract (docs in hdl/axi.py) has it -------------

#: The contract's offsets and fields (notes/axi-regmap.md), written out once more on purpose:
#: the description must not drift from what the C driver was written against.
CONTRACT = {
    "ID": (0x000, "RO"), "KEY": (0x004, "RO"), "GEOMETRY": (0x008, "RO"),
    "STATUS": (0x00C, "RO"), "CONTROL": (0x010, "RW"), "ACT_BEATS": (0x014, "RW"),
    "RES_BEATS": (0x018, "RW"), "CYCLES_BUSY": (0x020, "RO"), "CYCLES_RES_STALL": (0x024, "RO"),
    "VECTORS_DONE": (0x028, "RO"), "LOAD_ADDR": (0x040, "RW"), "LOAD_DATA": (0x044, "WO"),
    "ACT_DATA": (0x100, "WO"), "RES_DATA": (0x800, "RO"),
}
CONTRACT_FIELDS = {
    "GEOMETRY": {"act_lanes": (0, 8), "res_lanes": (8, 8), "res_width": (16, 8),
                 "engine": (24, 8)},
    "STATUS": {"busy": (0, 1), "layer_loaded": (1, 1), "load_ready": (2, 1),
               "act_ready": (3, 1), "res_valid": (4, 1), "tlast_error": (5, 1)},
    "CONTROL": {"clear": (0, 1), "soft_reset": (1, 1), "cpu_mode": (2, 1)},
}


def test_register_map_is_the_contract():
    assert {reg.name: (reg.offset, reg.access) for reg in axi.REGISTERS} == CONTRACT
    for reg in axi.REGISTERS:
        assert {f.name: (f.lsb, f.bits) for f in reg.fields} == CONTRACT_FIELDS.get(reg.name, {})
    assert axi.ID_VALUE == int.from_bytes(b"SCTR", "big")
    assert axi.ENGINE_CODES == {"dense": 0, "ternary": 1, "lfsr": 2, "permdiag": 3, "cim": 4}
    assert set(axi.ENGINE_CODES) == set(engine_names())


def test_register_map_words_do_not_overlap_and_fit_the_address_space():
    taken = set()
    for reg in axi.REGISTERS:
        assert reg.offset % 4 == 0 and reg.words >= 1
        words = set(range(reg.word, reg.word + reg.words))
        assert not words & taken, f"{reg.name} overlaps another register"
        taken |= words
        mask = 0
        for field in reg.fields:
            assert field.mask & mask == 0 and field.mask < 1 << 32, f"{reg.name}.{field.name}"
            mask |= field.mask
    assert max(taken) < 1 << (axi.ADDR_WIDTH - 2)
    # Every engine's PE=32 beat fits its window.
    for name in engine_names():
        wrapper = axi.AXIWrapper(make_engine(name, pe=32), key=0)
        assert wrapper.act_words <= axi.register("ACT_DATA").words
        assert wrapper.res_words <= axi.register("RES_DATA").words


def test_register_lookups_refuse_unknown_names():
    with pytest.raises(ValueError, match=r"^the AXI register map has no register 'NOPE'; its "
                                         r"registers are ID, KEY, GEOMETRY, .*, RES_DATA$"):
        axi.register("NOPE")
    with pytest.raises(ValueError, match=r"^AXI register STATUS has no field 'ready'; its fields "
                                         r"are busy, layer_loaded, load_ready, act_ready, "
                                         r"res_valid, tlast_error$"):
        axi.register("STATUS").field("ready")
    with pytest.raises(ValueError, match=r"^AXI register ID has no field 'x'; its fields are "
                                         r"none$"):
        axi.register("ID").field("x")


def test_wrapper_describes_ports_and_registers():
    engine = make_engine("dense", pe=2, fan_in=5, max_rows=5, max_cols=12)
    wrapper = axi.AXIWrapper(engine, key=0xDEADBEEF)
    section = wrapper.describe()
    ports = {port["name"]: (port["direction"], port["width"]) for port in section["ports"]}
    assert ports["s_axis_act_tdata"] == ("input", 40) and ports["m_axis_res_tdata"] == \
        ("output", 72) and ports["s_axis_load_tdata"] == ("input", 64)
    assert ports["s_axi_ctrl_awaddr"] == ("input", 12) and ports["s_axi_ctrl_rdata"] == \
        ("output", 32) and ports["aresetn"] == ("input", 1)
    assert all(name.startswith(("s_axis_act_", "m_axis_res_", "s_axis_load_", "s_axi_ctrl_"))
               or name in ("aclk", "aresetn") for name in ports)
    assert (section["act_words"], section["res_words"]) == (2, 3)
    assert section["geometry"] == 5 | 2 << 8 | 33 << 16 and section["key"] == 0xDEADBEEF
    assert [reg["name"] for reg in section["registers"]] == list(CONTRACT)
    assert section["top"] == "dense_engine_axi" and section["source_sha256"] == \
        axi.source_sha256()


class _WideResults(DenseEngine):
    """A dense engine whose result lanes are said to be 100 bits: more RES_DATA words than the
    window has at pe = 200."""

    @property
    def res_width(self):
        return 100


class _Unregistered(DenseEngine):
    name = "other"


def test_wrapper_refusals():
    with pytest.raises(TypeError, match=r"^AXIWrapper engine must be an Engine, not str$"):
        axi.AXIWrapper("dense")
    with pytest.raises(ValueError, match=r"^AXIWrapper has no engine code for the other engine; "
                                         r"codes exist for dense, ternary, lfsr, permdiag, cim$"):
        axi.AXIWrapper(_Unregistered(pe=1), key=0)
    with pytest.raises(ValueError, match=r"^AXIWrapper: the dense engine's act_lanes is 256; "
                                         r"GEOMETRY's act_lanes field holds at most 255$"):
        axi.AXIWrapper(make_engine("dense", pe=1, fan_in=256), key=0)
    with pytest.raises(ValueError, match=r"^AXIWrapper: the ternary engine's res_lanes is 300; "
                                         r"GEOMETRY's res_lanes field holds at most 255$"):
        axi.AXIWrapper(make_engine("ternary", pe=300, max_rows=300), key=0)
    with pytest.raises(ValueError, match=r"^AXIWrapper: a beat of the dense engine is 625 words "
                                         r"\(res_lanes \* res_width = 20000 bits\); the RES_DATA "
                                         r"window holds 512$"):
        axi.AXIWrapper(_WideResults(pe=200, max_rows=200), key=0)
    with pytest.raises(ValueError, match=r"^AXIWrapper: the dense engine's load addresses are "
                                         r"\d+ bits; s_axis_load_tdata carries at most 32$"):
        axi.AXIWrapper(make_engine("dense", pe=1, fan_in=1, max_rows=65536, max_cols=65536),
                       key=0)
    engine = make_engine("dense", pe=1)
    with pytest.raises(TypeError, match=r"^AXIWrapper key must be an integer in "
                                        r"\[0, 4294967295\], not '1'$"):
        axi.AXIWrapper(engine, key="1")
    with pytest.raises(ValueError, match=r"^AXIWrapper key must be an integer in "
                                         r"\[0, 4294967295\], not 4294967296$"):
        axi.AXIWrapper(engine, key=1 << 32)
    with pytest.raises(ValueError, match=r"^AXILiteSlave addr_width must be an integer in "
                                         r"\[3, 32\], not 2$"):
        axi.AXILiteSlave(2)
    for component in (axi.StreamMux, axi.StreamDemux):
        with pytest.raises(ValueError, match=rf"^{component.__name__} width must be an integer "
                                             rf"in \[1, 65536\], not 0$"):
            component(0)
    with pytest.raises(ValueError, match=r"^RegisterFile act_width must be an integer in "
                                         r"\[1, 14336\], not 14337$"):
        axi.RegisterFile(act_width=14337, res_width=8, load_addr_width=8, key=0, geometry=0)


# The parts, in Amaranth's simulator -----------------------------------------------------------

def _simulate(dut, bench):
    simulator = Simulator(dut)
    simulator.add_clock(1e-8)
    simulator.add_testbench(bench)
    simulator.run()


def test_axi_lite_slave_holds_responses_until_the_register_side_is_ready():
    slave = axi.AXILiteSlave()

    async def bench(ctx):
        ctx.set(slave.bready, 1)
        ctx.set(slave.rready, 1)
        # Data before address: both are taken, one request, held while ready is low.
        ctx.set(slave.wdata, 0xCAFE0001)
        ctx.set(slave.wstrb, 0b0101)
        ctx.set(slave.wvalid, 1)
        await ctx.tick()
        ctx.set(slave.wvalid, 0)
        assert ctx.get(slave.wready) == 0 and ctx.get(slave.write.valid) == 0
        ctx.set(slave.awaddr, 0x107)
        ctx.set(slave.awvalid, 1)
        await ctx.tick()
        ctx.set(slave.awvalid, 0)
        for _ in range(3):
            assert ctx.get(slave.write.valid) == 1 and ctx.get(slave.bvalid) == 0
            assert ctx.get(slave.write.payload.addr) == 0x41
            assert ctx.get(slave.write.payload.data) == 0xCAFE0001
            assert ctx.get(slave.write.payload.strb) == 0b0101
            await ctx.tick()
        ctx.set(slave.write.ready, 1)
        ctx.set(slave.write_error, 1)
        await ctx.tick()
        assert ctx.get(slave.bvalid) == 1 and ctx.get(slave.bresp) == axi.SLVERR
        assert ctx.get(slave.write.valid) == 0 and ctx.get(slave.awready) == 1
        await ctx.tick()
        assert ctx.get(slave.bvalid) == 0
        # A read: R carries the data and error of the cycle the register side took it.
        ctx.set(slave.araddr, 0x804)
        ctx.set(slave.arvalid, 1)
        await ctx.tick()
        ctx.set(slave.arvalid, 0)
        assert ctx.get(slave.read.valid) == 1 and ctx.get(slave.read.payload) == 0x201
        assert ctx.get(slave.arready) == 0
        ctx.set(slave.read.ready, 1)
        ctx.set(slave.read_data, 0x12345678)
        await ctx.tick()
        ctx.set(slave.read_data, 0)
        assert ctx.get(slave.rvalid) == 1 and ctx.get(slave.rdata) == 0x12345678
        assert ctx.get(slave.rresp) == axi.OKAY
        await ctx.tick()
        assert ctx.get(slave.rvalid) == 0 and ctx.get(slave.arready) == 1

    _simulate(slave, bench)


def test_beat_framer_marks_first_and_last_beats():
    framer = axi.BeatFramer()

    async def bench(ctx):
        ctx.set(framer.beats, 3)
        marks = []
        for fire in (1, 0, 1, 1, 1, 1):
            ctx.set(framer.fire, fire)
            marks.append((ctx.get(framer.first), ctx.get(framer.last)))
            await ctx.tick()
        assert marks == [(1, 0), (0, 0), (0, 0), (0, 1), (1, 0), (0, 0)]
        for beats in (0, 1):  # every beat is a vector
            ctx.set(framer.beats, beats)
            await ctx.tick()
            assert (ctx.get(framer.first), ctx.get(framer.last)) == (1, 1)

    _simulate(framer, bench)


def test_counters_count_events_and_clear():
    counters = axi.Counters()

    async def bench(ctx):
        for busy, stall, done in ((1, 0, 0), (1, 1, 0), (0, 1, 1), (1, 1, 1)):
            ctx.set(counters.busy, busy)
            ctx.set(counters.res_stall, stall)
            ctx.set(counters.vector_done, done)
            await ctx.tick()
        assert (ctx.get(counters.cycles_busy), ctx.get(counters.cycles_res_stall),
                ctx.get(counters.vectors_done)) == (3, 3, 2)
        ctx.set(counters.clear, 1)
        await ctx.tick()
        assert (ctx.get(counters.cycles_busy), ctx.get(counters.cycles_res_stall),
                ctx.get(counters.vectors_done)) == (0, 0, 0)

    _simulate(counters, bench)


def test_stream_mux_and_demux_switch_the_handshake():
    mux, demux = axi.StreamMux(8), axi.StreamDemux(8)

    async def bench_mux(ctx):
        ctx.set(mux.a.payload, 0x11)
        ctx.set(mux.a.valid, 1)
        ctx.set(mux.b.payload, 0x22)
        ctx.set(mux.o.ready, 1)
        for select, payload, valid, ready in ((0, 0x11, 1, (1, 0)), (1, 0x22, 0, (0, 1))):
            ctx.set(mux.select, select)
            assert (ctx.get(mux.o.payload), ctx.get(mux.o.valid)) == (payload, valid)
            assert (ctx.get(mux.a.ready), ctx.get(mux.b.ready)) == ready

    async def bench_demux(ctx):
        ctx.set(demux.i.payload, 0x33)
        ctx.set(demux.i.valid, 1)
        ctx.set(demux.b.ready, 1)
        for select, valid, ready in ((0, (1, 0), 0), (1, (0, 1), 1)):
            ctx.set(demux.select, select)
            assert (ctx.get(demux.a.valid), ctx.get(demux.b.valid)) == valid
            assert ctx.get(demux.i.ready) == ready and ctx.get(demux.b.payload) == 0x33

    for dut, bench in ((mux, bench_mux), (demux, bench_demux)):
        simulator = Simulator(dut)
        simulator.add_testbench(bench)
        simulator.run()


def test_register_file_pushes_act_beats_and_pops_results_in_cpu_mode():
    regs = axi.RegisterFile(act_width=40, res_width=40, load_addr_width=10, key=7, geometry=9)
    act_data, res_data = axi.register("ACT_DATA").word, axi.register("RES_DATA").word

    async def write(ctx, word, data, strb=0xF):
        ctx.set(regs.write.payload.addr, word)
        ctx.set(regs.write.payload.data, data)
        ctx.set(regs.write.payload.strb, strb)
        ctx.set(regs.write.valid, 1)
        ready = ctx.get(regs.write.ready)
        error = ctx.get(regs.write_error)
        await ctx.tick()
        ctx.set(regs.write.valid, 0)
        return ready, error

    async def bench(ctx):
        assert await write(ctx, act_data + 1, 0xAB) == (1, 1)  # stream mode: SLVERR
        await write(ctx, axi.register("CONTROL").word, 0b100)
        assert ctx.get(regs.cpu_mode) == 1
        await write(ctx, act_data, 0x44332211)
        ctx.set(regs.write.payload.addr, act_data + 1)
        ctx.set(regs.write.payload.data, 0xFFFFFF55)
        ctx.set(regs.write.payload.strb, 0x1)
        ctx.set(regs.write.valid, 1)
        assert ctx.get(regs.act.valid) == 1 and ctx.get(regs.act.payload) == 0x5544332211
        assert ctx.get(regs.write.ready) == 0  # held until the engine takes the beat
        ctx.set(regs.act.ready, 1)
        assert ctx.get(regs.write.ready) == 1 and ctx.get(regs.write_error) == 0
        await ctx.tick()
        ctx.set(regs.write.valid, 0)
        # RES_DATA: word 0 of the head beat, then word 1, which pops it.
        ctx.set(regs.res.payload, 0x99_87654321)
        ctx.set(regs.read.valid, 1)
        ctx.set(regs.read.payload, res_data)
        assert ctx.get(regs.read.ready) == 0  # no beat yet: the read waits
        ctx.set(regs.res.valid, 1)
        assert ctx.get(regs.read.ready) == 1 and ctx.get(regs.read_data) == 0x87654321
        assert ctx.get(regs.res.ready) == 0
        ctx.set(regs.read.payload, res_data + 1)
        assert ctx.get(regs.read_data) == 0x99 and ctx.get(regs.res.ready) == 1
        ctx.set(regs.read.payload, axi.register("KEY").word)
        assert ctx.get(regs.read_data) == 7 and ctx.get(regs.res.ready) == 0

    _simulate(regs, bench)


# What secateur rtl and export write ------------------------------------------------------------

def test_rtl_writes_the_wrapper_beside_the_engine(tmp_path):
    engine = make_engine("dense", **SIM_CONFIGS["dense"])
    bundle = write_rtl(engine, tmp_path)
    manifest = json.loads(bundle.manifest.read_text())
    # The wrapper carries the manifest's key: the file is the one that key builds.
    wrapper = axi.AXIWrapper(engine, key=axi_key(manifest["generator_key"]))
    assert manifest["axi"] == json.loads(json.dumps(wrapper.describe()))
    assert manifest["axi"]["key"] == int(manifest["generator_key"], 16) % (1 << 32)
    assert bundle.axi_verilog.read_text() == axi.verilog_text(wrapper)
    assert bundle.axi_filelist.read_text() == \
        "secateur.vlt\ndense_engine.v\ndense_engine_axi.v\n"
    assert write_rtl(engine, tmp_path, reuse=True).reused
    # A wrapper whose source changed (its recorded digest differs) is written again; the
    # engine's Verilog is kept.
    manifest["axi"]["source_sha256"] = "0" * 64
    bundle.manifest.write_text(json.dumps(manifest))
    engine_written = bundle.verilog.stat().st_mtime_ns
    bundle.axi_verilog.unlink()
    again = write_rtl(engine, tmp_path, reuse=True)
    assert not again.reused and bundle.verilog.stat().st_mtime_ns == engine_written
    assert bundle.axi_verilog.read_text() == axi.verilog_text(wrapper)
    assert json.loads(bundle.manifest.read_text())["axi"]["source_sha256"] == \
        axi.source_sha256()
    assert write_rtl(engine, tmp_path, reuse=True).reused


@pytest.mark.regress  # elaborating a 256-lane dense engine takes 9 s
def test_rtl_of_an_engine_the_wrapper_refuses_says_why(tmp_path):
    engine = make_engine("dense", pe=1, fan_in=256, max_rows=1, max_cols=256, tree_stages=0)
    bundle = write_rtl(engine, tmp_path)
    section = json.loads(bundle.manifest.read_text())["axi"]
    assert section == {"unavailable": "AXIWrapper: the dense engine's act_lanes is 256; "
                                      "GEOMETRY's act_lanes field holds at most 255"}
    assert not bundle.axi_verilog.exists() and not bundle.axi_filelist.exists()


def test_export_lists_the_wrapper_and_defines_its_register_map(tmp_path):
    engine = make_engine("dense", **SIM_CONFIGS["dense"])
    bundle = export_bundle(engine, tmp_path)
    assert bundle.axi_verilog in bundle.files() and bundle.axi_filelist in bundle.files()
    readme = bundle.readme.read_text()
    assert "dense_engine_axi.v   the AXI4 wrapper, module dense_engine_axi" in readme
    assert "dense_engine_axi.f   filelist of the wrapper and the engine" in readme
    section = json.loads(bundle.manifest.read_text())["axi"]
    defines = dict(re.findall(r"^#define (DENSE_ENGINE_AXI_\w+) (\S+)", bundle.header.read_text(),
                              re.MULTILINE))
    expected = {"DENSE_ENGINE_AXI_ID_VALUE": f"0x{axi.ID_VALUE:x}u",
                "DENSE_ENGINE_AXI_KEY_VALUE": f"0x{section['key']:x}u",
                "DENSE_ENGINE_AXI_GEOMETRY_VALUE": f"0x{section['geometry']:x}u",
                "DENSE_ENGINE_AXI_ACT_WORDS": "2u", "DENSE_ENGINE_AXI_RES_WORDS": "3u",
                "DENSE_ENGINE_AXI_ADDR_WIDTH": "12u", "DENSE_ENGINE_AXI_LOAD_TDATA_ADDR_LSB": "32u"}
    for reg in axi.REGISTERS:
        expected[f"DENSE_ENGINE_AXI_{reg.name}"] = f"0x{reg.offset:03x}u"
        for field in reg.fields:
            stem = f"DENSE_ENGINE_AXI_{reg.name}_{field.name.upper()}"
            expected[stem] = f"0x{field.mask:x}u"
            expected[f"{stem}_LSB"] = f"{field.lsb}u"
    assert {name: defines.get(name) for name in expected} == expected
