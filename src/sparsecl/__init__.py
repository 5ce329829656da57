"""sparsecl: sparse-network continual learning, reproduced as a Snakemake pipeline."""

__version__ = "0.1.0"
