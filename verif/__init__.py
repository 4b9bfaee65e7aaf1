"""cocotb testbenches (one per DUT), stream drivers and the pytest launcher."""
