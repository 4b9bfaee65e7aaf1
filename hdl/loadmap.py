"""The load port: how a host writes an engine's layer configuration and weights.

Every engine has one ``load`` stream of ``{addr, data}`` beats with 32-bit ``data``. An engine
declares a :class:`LoadMap`: a list of :class:`Region` objects, each a register file or a
memory, whose word address is the concatenation of named fields. The same object decodes
addresses in the hardware (:meth:`LoadMap.decode`) and encodes them on the host
(:meth:`LoadMap.address`), and it is written into ``manifest.json``, so software and hardware
cannot disagree about the map.

Address layout, most significant bit first::

    addr = {region_index, field_0, field_1, ..., field_k}   (unused high field bits are zero)

Why a port and not a memory image baked in at generation: the same bitstream or simulator
build then runs any layer of any network, layer after layer, which whole-network inference
needs, and the build cache keys on generator parameters only.
"""

from __future__ import annotations

from amaranth.hdl import Signal, unsigned
from amaranth.lib import data

__all__ = ["DATA_WIDTH", "Region", "LoadMap", "load_payload_layout"]

#: Width of a load beat's data. Wider memory words are written in 32-bit chunks.
DATA_WIDTH = 32


class Region:
    """One addressable region of the load map.

    Parameters
    ----------
    name : str
        Region name, a Python identifier.
    fields : list of (str, int)
        Address fields, most significant first, as ``(name, number_of_values)``; a field of
        ``n`` values is ``max(1, ceil(log2(n)))`` bits wide.
    doc : str
        What the region holds, for the manifest and the C header.

    Raises
    ------
    ValueError
        If the name is not an identifier or a field has fewer than one value.
    """

    def __init__(self, name: str, fields: list[tuple[str, int]], doc: str = ""):
        if not name.isidentifier():
            raise ValueError(f"Region name must be an identifier, not {name!r}")
        for field_name, count in fields:
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"Region {name} field {field_name} must have >= 1 values, "
                                 f"not {count!r}")
        self._name = name
        self._fields = [(field_name, count, max(1, (count - 1).bit_length()))
                        for field_name, count in fields]
        self._doc = doc

    @property
    def name(self) -> str:
        return self._name

    @property
    def doc(self) -> str:
        return self._doc

    @property
    def width(self) -> int:
        return sum(width for _, _, width in self._fields)

    def offset(self, **values) -> int:
        """The address within the region of the given field values.

        Raises
        ------
        ValueError
            If a field is missing, unknown or out of range.
        """
        unknown = set(values) - {name for name, _, _ in self._fields}
        if unknown:
            raise ValueError(f"Region {self._name} has no field {sorted(unknown)[0]}")
        offset = 0
        for field_name, count, width in self._fields:
            if field_name not in values:
                raise ValueError(f"Region {self._name} needs field {field_name}")
            value = values[field_name]
            if not 0 <= value < count:
                raise ValueError(f"Region {self._name} field {field_name} must be in "
                                 f"[0, {count - 1}], not {value}")
            offset = (offset << width) | value
        return offset

    def slices(self, offset_signal) -> dict:
        """The field slices of an in-region offset signal, by name (HDL side)."""
        result, low = {}, self.width
        for field_name, _, width in self._fields:
            low -= width
            result[field_name] = offset_signal[low:low + width]
        return result

    def describe(self) -> dict:
        return {"doc": self._doc,
                "fields": [{"name": name, "values": count, "bits": width}
                           for name, count, width in self._fields]}


class LoadMap:
    """An engine's load address map: regions selected by the top address bits.

    Parameters
    ----------
    regions : list of Region
        In address order; region ``k`` has index ``k``.

    Raises
    ------
    ValueError
        If there are no regions or two share a name.
    """

    def __init__(self, regions: list[Region]):
        names = [region.name for region in regions]
        if not regions or len(set(names)) != len(names):
            raise ValueError(f"LoadMap regions must be non-empty with unique names, not {names}")
        self._regions = {region.name: (index, region) for index, region in enumerate(regions)}
        self._select_width = max(1, (len(regions) - 1).bit_length())
        self._offset_width = max(region.width for region in regions)

    @property
    def addr_width(self) -> int:
        return self._select_width + self._offset_width

    def region(self, name: str) -> Region:
        return self._regions[name][1]

    def address(self, region: str, **fields) -> int:
        """The load address of one word (host side)."""
        index, described = self._regions[region]
        return (index << self._offset_width) | described.offset(**fields)

    def payload(self, addr: int, data: int) -> int:
        """The ``load`` stream payload of one beat: ``data`` above ``addr``."""
        return (int(data) << self.addr_width) | int(addr)

    def decode(self, addr) -> dict:
        """Per region: ``(selected, fields)`` for an address signal (HDL side)."""
        select = addr[self._offset_width:]
        return {name: (select == index, region.slices(addr[:self._offset_width]))
                for name, (index, region) in self._regions.items()}

    def describe(self) -> dict:
        return {"addr_width": self.addr_width, "data_width": DATA_WIDTH,
                "offset_width": self._offset_width,
                "regions": {name: dict(index=index, **region.describe())
                            for name, (index, region) in self._regions.items()}}


def load_payload_layout(load_map: LoadMap) -> data.StructLayout:
    """Payload of the ``load`` stream: ``{addr, data}``, ``addr`` in the low bits."""
    return data.StructLayout({"addr": unsigned(load_map.addr_width),
                              "data": unsigned(DATA_WIDTH)})
