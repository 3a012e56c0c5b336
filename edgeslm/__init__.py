"""edgeslm: get a compressed small language model onto a device you own and measure it there."""

__version__ = "0.1.0"
