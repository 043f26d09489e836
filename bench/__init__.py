"""foldserve's measuring tools, installed as `foldserve.bench`: the benchmark suite (`foldserve
bench`), the fuzzer (`foldserve fuzz`), the shift evaluation (`foldserve shift-eval`), the echo and
bare-model baselines, and scripts that print figures (`python -m foldserve.bench.soak`, ...).

None of it is imported by `foldserve serve`: the commands reach it through the `foldserve.commands`
entry points.
"""
