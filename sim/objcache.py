"""A compiler cache for Verilator's runtime library, run by ``verilated.mk`` as ``$(OBJCACHE)``.

Every Verilator build compiles the same runtime sources (``verilated.cpp``,
``verilated_vpi.cpp``, ``verilated_threads.cpp``, ...) before the design's own C++: about 10 s
of the 12.6 s that a cocotb build of a small module takes on one core. This program receives
each compile command (``$(OBJCACHE) $(CXX) ... -c -o X.o SOURCE``); for a source in
Verilator's ``include/`` directory it looks the object up under a key of the whole command
line (but the output path) and the source's bytes, and on a miss compiles it and stores the
object and its dependency file, unless they depend on a file of the build directory. Any other
command runs unchanged. Python's standard library only, so it starts in milliseconds.

The cache is ``$SECATEUR_OBJCACHE_DIR``; a missing variable or directory turns it off.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile


def _output(argv):
    for index, item in enumerate(argv[:-1]):
        if item == "-o":
            return index + 1
    return None


def _cached_compile(argv, directory):
    out_index = _output(argv)
    if out_index is None or "-c" not in argv or not argv[-1].endswith(".cpp"):
        return None
    source = os.path.abspath(argv[-1])
    if os.path.basename(os.path.dirname(source)) != "include" or "verilator" not in source:
        return None
    output = argv[out_index]
    with open(source, "rb") as stream:
        key = hashlib.sha256(stream.read())
    key.update("\0".join(argv[:out_index] + argv[out_index + 1:]).encode())
    entry = os.path.join(directory, key.hexdigest()[:32])
    depfile = os.path.splitext(output)[0] + ".d"
    if os.path.isfile(os.path.join(entry, "object.o")):
        shutil.copyfile(os.path.join(entry, "object.o"), output)
        if os.path.isfile(os.path.join(entry, "deps.d")):
            with open(os.path.join(entry, "deps.d")) as stream:
                deps = stream.read()
            with open(depfile, "w") as stream:
                stream.write(deps.replace("@OBJECT@", output, 1))
        return 0
    status = subprocess.call(argv)
    if status != 0 or not os.path.isfile(output):
        return status
    deps = ""
    if os.path.isfile(depfile):
        with open(depfile) as stream:
            deps = stream.read()
        paths = deps.replace("\\\n", " ").split(":", 1)[-1].split()
        if any(not os.path.isabs(path) or os.path.abspath(path).startswith(os.getcwd() + os.sep)
               for path in paths):
            return status  # depends on the design: not shareable
        deps = deps.replace(output, "@OBJECT@", 1)
    staging = None
    try:
        staging = tempfile.mkdtemp(dir=directory, prefix=".store.")
        shutil.copyfile(output, os.path.join(staging, "object.o"))
        with open(os.path.join(staging, "deps.d"), "w") as stream:
            stream.write(deps)
        os.rename(staging, entry)
    except OSError:  # another build stored it first, or the cache is not writable
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    return status


def main(argv):
    directory = os.environ.get("SECATEUR_OBJCACHE_DIR", "")
    if directory and os.path.isdir(directory):
        status = _cached_compile(argv, directory)
        if status is not None:
            return status
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
