"""qatcmp: is this quantized model variant really worse than that one, or is it noise?"""

__version__ = "0.1.0"
