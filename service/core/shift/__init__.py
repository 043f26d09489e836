"""The covariate-shift monitor: what a served model's BN statistics say live traffic should look
like, and whether it still does.

- `stats`: the statistic (per tapped layer, sentinels, class prior) and its running state;
- `monitor`: one model version's monitor, fed by every model run, scored every few examples;
- `input_tap`: the monitor of a model foldserve did not train, from its input BN's statistics;
- `prune`: the graph without its tap outputs, for runs without the monitor;
- `metrics`: its Prometheus series, read at scrape time (published on a timer by each worker).
"""
