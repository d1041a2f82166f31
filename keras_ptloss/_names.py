"""Choices shared by the library and the demo's command line.

A module without imports, so that the command line can build its parser
(and print `--help`) without loading Keras.
"""

# How `select_coefficients` and `search_coefficients` shape coefficients:
# one `(M,)` vector for all classes, or `(K, M)`, one row per class.
MODES = ("shared", "classwise")

# How `closeness` (and the selection) compares a proxy teacher with labels.
METRICS = ("brier", "l2", "tvd", "nll")

# How `search_coefficients` scores a trained student on validation data.
SCORE_METRICS = ("accuracy", "nll")
