"""thtb: select hard, high-value instruction data (THTB, arXiv 2510.13892).

The selection library is importable without Hydra, W&B or a GPU.
"""

__version__ = "0.1.0"
