"""Layer 1, the base: the error hierarchy and exit codes (`errors`), the argument checks every
layer shares (`checks`), and path checks and atomic writes (`fileio`). Imports nothing else
of vaesdk."""
