"""The lab's experiments, one module per question; each `run(...)` returns plain JSON-able data."""
