# dst: per-task training rules (see src/sparsecl/methods/dst.py).
