"""The data a model is trained and checked on, by default: the embedded digits set, the label
column of a CSV, and the seeded split that training records in the model file and
`foldserve predict` replays against a server."""

from __future__ import annotations

DIGITS = "digits"
LABEL_COLUMN = "label"
SPLIT_SEED = 0
VAL_FRACTION = 0.15
TEST_FRACTION = 0.2
