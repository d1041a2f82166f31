"""Choices shared by the library and the demo's command line.

A module without imports, so that the command line can build its parser
(and print `--help`) without loading Keras.
"""

# How `select_coefficients` and `search_coefficients` shape coefficients:
# one `(M,)` vector for all classes, or `(K, M)`, one row per class.
MODES = ("shared", "classwise")
