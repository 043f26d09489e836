"""`foldserve lab`: seeded experiments on why BatchNorm works, with plots and a Markdown report.

- `config`: the sizes of a full and a `--quick` run;
- `experiments/`: one module per question (learning speed and distribution stability, Santurkar's
  noisy BN and smoothness, mini-batch size, test time, covariate shift);
- `plots`: the PNG figures (matplotlib, Agg backend);
- `report` and `claims`: the Markdown report and the claim-by-claim verdicts;
- `run`: runs it all into an output directory; `cli`: the subcommand.
"""
