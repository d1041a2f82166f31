"""Choices shared with the command line, which must not import Keras."""

MODES = ("shared", "classwise")

METRICS = ("brier", "l2", "tvd", "nll")

SCORE_METRICS = ("accuracy", "nll")
