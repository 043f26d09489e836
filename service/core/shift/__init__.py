"""The covariate-shift monitor: sequential tests of live traffic against a reference sample.

- `reference`: fitting a reference (summary groups, their normal scores) from clean rows;
- `summaries`, `normal_scores`: live rows → each summary's normal score, a batch at a time;
- `bank`, `cusum`: the CUSUM tests, their thresholds from the stated ARL, the batched walk;
- `monitor`, `state`, `shared`, `snapshot`: one model version's monitor and its state, in one
  process or shared by the server's processes; what it says at one moment;
- `source`, `load`, `input_tap`: where a model's rows and reference come from;
- `replay`: clean replays through the tests (measured false-alarm rates);
- `prune`: the graph without its tap outputs, for runs without the monitor;
- `metrics`, `describe`: its Prometheus series and DescribeModel's `shift` field.
"""
