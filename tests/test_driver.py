"""The C driver of the export bundle (issue 18, section 4): ``<top>_driver.c`` compiled as
C99 with ``-Wall -Wextra -Werror -pedantic`` for every engine, and run by the harness of
:mod:`secateur.sim.driver_bench`

* on a recording bus (``sim/driver_harness/mock_bus.c``): the load beats it writes through
  LOAD_ADDR/LOAD_DATA are exactly ``Layer.load_beats()`` (the same beats, each address once),
  its act beats are ``Layer.input_beats(x)``, ACT_BEATS/RES_BEATS the layer's beats per
  vector, and the results it decodes from replayed result words ``Layer.decode_results``;
  and it refuses layers that break the engine's structure or shape before writing a beat;
* on the RTL (``axi_bus.cpp``: every access an AXI4-Lite transaction on the Verilated
  ``<top>_axi``): random layers one after the other on the same hardware, requantized or raw,
  with or without a bias, bit-exact against ``Layer.reference``; the counters and STATUS.
"""

import shutil
import subprocess

import numpy as np
import pytest
from conftest import in_make_test
from test_integration_bundle import SIM, SWEEP, random_weights

from secateur.gen.driver import scratch_words
from secateur.gen.registry import make_engine
from secateur.hdl.axi import REGISTERS
from secateur.sim.driver_bench import C_FLAGS, DriverBench, DriverError, random_results

OFFSETS = {register.name: register.offset for register in REGISTERS}
STATUS_BUSY, STATUS_LAYER_LOADED, STATUS_TLAST_ERROR = 1 << 0, 1 << 1, 1 << 5

#: Each engine's simulated configuration of the bundle test, then the format sweep's.
MOCK = list(SIM.items()) + [case for case in SWEEP if case not in SIM.items()]
FIRST_OF_EACH = set(range(len(SIM)))


def _id(case) -> str:
    name, params = case
    return name + "-" + "-".join(f"{key}{value}" for key, value in params.items())


@pytest.fixture(scope="module")
def mock_harnesses(tmp_path_factory):
    """One compiled mock harness per configuration, built on first use."""
    built = {}

    def get(case):
        key = _id(case)
        if key not in built:
            engine = make_engine(case[0], **case[1])
            bench = DriverBench(engine, "mock")
            built[key] = engine, bench, bench.build(tmp_path_factory.mktemp(case[0]))
        return built[key]
    return get


def _vectors(rng, layer) -> np.ndarray:
    x = rng.integers(-128, 128, size=(int(rng.integers(1, 4)), layer.cols))
    x[rng.random(x.shape) < 0.2] = 0
    return x.astype(np.int8)


@pytest.mark.parametrize("case", in_make_test(MOCK, FIRST_OF_EACH), ids=[_id(c) for c in MOCK])
def test_driver_formats_match_the_layer(case, mock_harnesses, seed):
    engine, bench, executable = mock_harnesses(case)
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(6):
        weights = random_weights(rng, engine)
        layer = engine.layer(weights)
        x = _vectors(rng, layer)
        cases.append((layer, weights, x, random_results(rng, engine, layer, x.shape[0])))
    # One pass per region, the least scratch (one word a pass), and sizes in between.
    full = scratch_words(engine)[0]
    scratch = [0, 2, int(rng.integers(2, full + 1)), full, int(rng.integers(2, 40)), 0]
    runs = bench.run(executable, cases, scratch)
    for trial, (run, (layer, weights, x, res)) in enumerate(zip(runs, cases)):
        what = (f"{_id(case)}: seed {seed}, trial {trial}, layer {layer.rows}x{layer.cols}, "
                f"scratch {scratch[trial]}")
        beats, want = run.load_beats(OFFSETS), layer.load_beats()
        assert len({addr for addr, _ in beats}) == len(beats), what + ": an address twice"
        assert dict(beats) == dict(want) and len(beats) == len(want), what
        assert run.register_writes(OFFSETS["ACT_BEATS"]) == [layer.input_beats_per_vector], what
        assert run.register_writes(OFFSETS["RES_BEATS"]) == [layer.result_beats_per_vector], what
        assert run.act_payloads(bench.act_words, OFFSETS) == layer.input_beats(x), what
        assert np.array_equal(run.y, layer.decode_results(res, x.shape[0])), what


def _refuses(bench, executable, layer, weights, code: int) -> None:
    """The driver refuses ``weights`` (``layer`` gives only the shapes) with ``code`` before
    writing a load beat."""
    x = np.zeros((1, layer.cols), np.int8)
    with pytest.raises(DriverError, match=rf"ERROR load_layer {code} .*\(load beats written: "
                                          rf"0\)"):
        bench.run(executable, [(layer, weights, x, [])])


def test_driver_refuses_broken_layers(mock_harnesses, seed):
    """Each layer is legal for Python, then broken in the arrays the driver gets."""
    rng = np.random.default_rng(seed)
    # ternary: a weight of 2.
    engine, bench, executable = mock_harnesses(("ternary", SIM["ternary"]))
    weights = random_weights(rng, engine, requant=False, bias=False)
    w = weights["w"].copy()
    w[0, 0] = 2
    _refuses(bench, executable, engine.layer(weights), dict(weights, w=w), -3)
    # lfsr: a non-zero weight off its row's mask (k = 1), and a seed out of range.
    engine, bench, executable = mock_harnesses(("lfsr", SIM["lfsr"]))
    weights = dict(random_weights(rng, engine, requant=False, bias=False), k=np.int64(1))
    while weights["w"].shape[1] < 2:
        weights = dict(random_weights(rng, engine, requant=False, bias=False), k=np.int64(1))
    layer = engine.layer({**weights, "w": np.zeros_like(weights["w"])})
    w = np.zeros_like(weights["w"])
    w[0, int(weights["seeds"][0]) % w.shape[1]] = 1  # not the kept column seeds[0] - 1
    _refuses(bench, executable, layer, dict(weights, w=w), -3)
    seeds = weights["seeds"].copy()
    seeds[0] = w.shape[1] + 1
    _refuses(bench, executable, layer, dict(weights, w=np.zeros_like(w), seeds=seeds), -3)
    # permdiag: two offsets in one block.
    engine, bench, executable = mock_harnesses(("permdiag", SIM["permdiag"]))
    w = np.zeros((4, 4), np.int8)
    w[0, 0] = w[1, 0] = 1
    layer = engine.layer({"w": np.zeros((4, 4), np.int8), "p": np.int64(2)})
    _refuses(bench, executable, layer, {"w": w, "p": np.int64(2)}, -3)
    # ternary: more non-zero groups than max_groups (a legal shape): found by the checking
    # pass, before the config registers go out.
    engine, bench, executable = mock_harnesses(("ternary", dict(SIM["ternary"], max_groups=4)))
    w = np.ones((engine.max_rows, engine.max_cols), np.int8)
    layer = engine.layer({"w": np.zeros_like(w)})
    _refuses(bench, executable, layer, {"w": w}, -4)
    # A shift beyond the requantizer's, and a layer larger than the engine.
    engine, bench, executable = mock_harnesses(("dense", SIM["dense"]))
    weights = random_weights(rng, engine, requant=True, bias=False)
    layer = engine.layer(weights)
    _refuses(bench, executable, layer, dict(weights, shift=np.int64(48)), -3)
    _refuses(bench, executable, layer,
             {"w": np.zeros((engine.max_rows + 1, layer.cols), np.int8)}, -2)


@pytest.mark.sim
@pytest.mark.parametrize("name", list(SIM))
def test_driver_on_the_rtl(name, seed):
    engine = make_engine(name, **SIM[name])
    bench = DriverBench(engine, "axi")
    executable = bench.build()
    rng = np.random.default_rng(seed)
    cases = []
    # Requantized with a bias, raw, requantized without, raw with a bias, then at random:
    # each layer finds the previous one's words in the engine's memories.
    for requant, bias in ((True, True), (False, False), (True, False), (False, True),
                          (None, None), (None, None)):
        weights = random_weights(rng, engine, requant=requant, bias=bias)
        layer = engine.layer(weights)
        cases.append((layer, weights, _vectors(rng, layer), None))
    runs = bench.run(executable, cases, scratch=[0, 2, 0, 7, 0, 0])  # and small scratches
    for trial, (run, (layer, weights, x, _)) in enumerate(zip(runs, cases)):
        what = (f"{_id((name, SIM[name]))}: seed {seed}, trial {trial}, layer "
                f"{layer.rows}x{layer.cols}, requant {layer.requant is not None}, bias "
                f"{layer.bias is not None}")
        assert np.array_equal(run.y, layer.reference(x)), what
        assert run.counters["vectors_done"] == x.shape[0], what
        assert 0 < run.counters["cycles_busy"], what
        assert run.status & (STATUS_BUSY | STATUS_LAYER_LOADED | STATUS_TLAST_ERROR) == \
            STATUS_LAYER_LOADED, what
    print(f"{name}: build {bench.build_seconds:.1f} s, {len(cases)} layers, "
          f"{sum(x.shape[0] for _, _, x, _ in cases)} vectors in {runs[0].cycles} cycles, "
          f"{runs[0].seconds:.2f} s")


def test_driver_through_a_memory_mapped_window(mock_harnesses, tmp_path):
    """The other bus: a volatile uint32_t window (here an array standing for the mapped
    registers). init checks ID, KEY and GEOMETRY through it and writes CONTROL; a wrong KEY
    is refused. And the driver header compiles as C++ (extern "C")."""
    engine, bench, executable = mock_harnesses(("dense", SIM["dense"]))
    top, TOP = engine.top, engine.top.upper()
    program = tmp_path / "window.c"
    program.write_text(f"""#include "{top}_driver.h"
static uint32_t window[1024];
int main(void)
{{
    struct {top}_bus bus = {{0}};
    bus.base = window;
    window[{TOP}_AXI_ID / 4] = {TOP}_AXI_ID_VALUE;
    window[{TOP}_AXI_KEY / 4] = {TOP}_AXI_KEY_VALUE;
    window[{TOP}_AXI_GEOMETRY / 4] = {TOP}_AXI_GEOMETRY_VALUE;
    if ({top}_init(&bus) != {TOP}_DRIVER_OK)
        return 1;
    if (window[{TOP}_AXI_CONTROL / 4] != ({TOP}_AXI_CONTROL_CPU_MODE | {TOP}_AXI_CONTROL_CLEAR))
        return 2;
    window[{TOP}_AXI_KEY / 4] ^= 1u;
    return {top}_init(&bus) == {TOP}_DRIVER_ERR_HARDWARE ? 0 : 3;
}}
""")
    directory = executable.parent
    binary = tmp_path / "window"
    result = subprocess.run(["gcc", *C_FLAGS, f"-I{directory}", str(program),
                             str(directory / f"{top}_driver.c"), "-o", str(binary)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert subprocess.run([str(binary)]).returncode == 0
    if shutil.which("g++"):
        result = subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror",
                                 "-fsyntax-only", f"-I{directory}", "-x", "c++",
                                 str(directory / f"{top}_driver.h")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
