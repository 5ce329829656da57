# focil: per-task training rules (see src/sparsecl/methods/focil.py).
