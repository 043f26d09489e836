"""Kept for DescribeModel's adapter (`foldserve.api.describe`), which strips this suffix from a
score's name; the sequential monitor has no sentinels, so no name carries it. It goes once the
adapter builds its message with `foldserve.core.shift.describe.shift_monitor`."""

SENTINEL_SUFFIX = "/sentinel"
