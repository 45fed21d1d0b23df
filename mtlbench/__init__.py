"""mtlbench: one protocol, many methods, for BUS segmentation + classification."""

__version__ = "0.1.0"
