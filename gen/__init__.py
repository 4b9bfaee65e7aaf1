"""Parameters -> Verilog, filelists and manifests; the ``secateur`` command line."""
