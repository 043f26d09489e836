"""Report sections 1-3: learning speed, distribution stability, and Santurkar's tests."""

from __future__ import annotations

from foldserve.training.lab.claims.common import steps_text
from foldserve.training.lab.experiments.nets import FIGURE1_HIDDEN, LABELS
from foldserve.training.lab.experiments.smoothness import STEP_SIZES
from foldserve.training.lab.report.markdown import figure, pm, table


def _row(results: dict, kind: str, lr: float) -> dict:
    return next(r for r in results["speed"]["summary"] if r["kind"] == kind and r["lr"] == lr)


def _plateau(results: dict, kind: str, lr: float) -> str:
    """When the runs of `kind` at `lr` first passed 50% validation accuracy (ten classes)."""
    steps = []
    for run in results["speed"]["runs"]:
        if run["kind"] == kind and run["lr"] == lr:
            curve = zip(run["curve"]["step"], run["curve"]["val_accuracy"], strict=True)
            steps.append(next((step for step, accuracy in curve if accuracy >= 0.5), None))
    return ", ".join("never" if s is None else f"step {s}" for s in steps)


def _speedup(results: dict, lr: float) -> str:
    bn, glorot = _row(results, "bn", lr), _row(results, "plain-glorot", lr)
    if not (bn["reached"] and glorot["reached"]):
        return ""
    factor = glorot["steps_to_target"]["mean"] / bn["steps_to_target"]["mean"]
    return f" At rate {lr:g} BN got there {factor:.1f}× sooner than the Glorot network."


def learning_speed(results: dict) -> str:
    cfg, speed = results["meta"]["config"], results["speed"]
    ref, target = cfg["reference_lr"], f"{speed['target']:.0%}"
    rows = [
        [f"{r['lr']:g}", LABELS[r["kind"]], steps_text(r), pm(r["final_val_accuracy"]),
         pm(r["test_accuracy"])]
        for r in sorted(speed["summary"], key=lambda r: r["lr"])
    ]  # fmt: skip
    headers = ["SGD rate", "network", f"steps to {target}", "final val. accuracy", "test accuracy"]
    curves = figure("learning_speed.png", "Validation accuracy against steps (band: min to max)")
    return f"""## 1. Learning speed (Ioffe & Szegedy, Figure 1(a))

The network of Figure 1, scaled to digits: 64 inputs (pixels divided by 16, into [0, 1]), three
hidden layers of {FIGURE1_HIDDEN[0]} sigmoid units, 10 outputs; "with BN" puts a BatchNorm1d
between each Linear and its sigmoid (the project's `build_mlp` with `activation=nn.Sigmoid`).
The project's `fit` trains it with SGD (the project's `sgd`: Nesterov momentum 0.9),
mini-batches of {speed["batch_size"]}, a constant learning rate and no weight decay, for
{speed["summary"][0]["steps"]} steps, measuring validation accuracy every {cfg["eval_every"]}
steps. Both networks start from PyTorch's default initialization (uniform ±1/√fan-in), under
which the plain sigmoid network sits on a plateau at chance (at rate {ref:g} its seeds first
passed 50% validation accuracy at: {_plateau(results, "plain", ref)}); so that BN is not credited
with merely repairing a poor start, a third network without BN starts from Glorot's
initialization, the one made for sigmoids. "Steps to {target}" is the first measurement at or
above that validation accuracy (mean ± std over the seeds that reached it; "k/n" when only some
did).{_speedup(results, ref)}

{curves}
{table(headers, rows, "llrrr")}"""


def stability(results: dict) -> str:
    ref = results["meta"]["config"]["reference_lr"]
    rows = [
        [LABELS[r["kind"]], " / ".join(pm(s) for s in r["epoch_mean_shift"]),
         " / ".join(pm(s) for s in r["early_mean_shift"]),
         " / ".join(pm(s) for s in r["epoch_std_change"]), pm(r["train_view_mean_shift"])]
        for r in results["speed"]["stability"]
    ]  # fmt: skip
    headers = ["network", "mean shift per epoch, layers 1/2/3", "same, first 5 epochs",
               "|log std ratio| per epoch", "training view: shift per measurement"]  # fmt: skip
    percentiles = figure(
        "sigmoid_percentiles.png",
        "15th/50th/85th percentiles of a last-hidden-layer sigmoid's input over training",
    )
    drift = figure("layer_drift.png", "Per-epoch mean shift of each hidden layer's sigmoid inputs")
    return f"""## 2. Distribution stability (Ioffe & Szegedy, Figure 1(b, c))

The lecture's picture: without BN, the inputs a later layer sees keep moving as earlier layers
learn; with BN their mean and variance stay put (at β and γ²). Figure 1(b, c) shows it with the
15th, 50th and 85th percentiles of one last-hidden-layer sigmoid's input over training. Ours are
measured on the validation images in eval mode (the network as it would be served), for unit 0
of the last hidden layer, seed 0, at rate {ref:g}.

{percentiles}
Every layer, every epoch: for each hidden unit, the mean and standard deviation of its sigmoid
input over the validation images; the table gives, per layer, the epoch-to-epoch change of the
mean in units of the previous standard deviation and the change of the standard deviation as
|log ratio|, averaged over units and epochs (mean ± std over seeds; the figure: mean over
seeds). The last column is the last hidden layer as the next layer sees it *during training*
(training mode: BN normalizes with the batch's own statistics, injected noise is drawn), between
consecutive measurements (median over training). In eval mode BN's inputs also move with its
running averages, which are themselves noisy estimates (momentum 0.1: roughly the last ten
batches); the jitter of the BN panel in the percentile figure may be that, rather than learning.

{drift}
{table(headers, rows, "lrrrr")}"""


def noisy_bn(results: dict) -> str:
    rows = []
    for lr in results["meta"]["config"]["learning_rates"]:
        bn, noisy = _row(results, "bn", lr), _row(results, "noisy-bn", lr)
        rows.append([f"{lr:g}", steps_text(bn), steps_text(noisy),
                     pm(bn["final_val_accuracy"]), pm(noisy["final_val_accuracy"])])  # fmt: skip
    headers = ["SGD rate", "BN: steps", "BN + noise: steps", "BN: final val. acc.",
               "BN + noise: final val. acc."]  # fmt: skip
    panels = figure(
        "noisy_bn.png",
        "Left: validation accuracy. Middle, right: a last-layer sigmoid's input as the next "
        "layer sees it in training (15/50/85th percentiles), BN and BN + noise",
    )
    return f"""## 3. Is it the covariate shift? (Santurkar et al. 2018)

**Noisy BN.** Santurkar et al. inject, after every BN, noise of non-zero mean and non-unit
variance whose parameters change every step, so that the distribution each layer sees moves all
the time, and find that the network still trains about as fast as with plain BN. Ours draws, on
every training forward pass, a per-unit shift uniform in ±1 and a per-unit scale log-uniform in
[1/2, 2] (an identity at evaluation), chosen before the runs and not tuned. How much it moves
the last layer's inputs is the last column of section 2's table.

{table(headers, rows, "lrrrr")}
{panels}"""


def smoothness(results: dict) -> str:
    cfg, summary = results["meta"]["config"], results["speed"]["smoothness"]
    rows = [
        [LABELS[r["kind"]], pm(r["loss_range"], 4), pm(r["grad_change"]), pm(r["beta"], 2),
         pm(r["grad_norm"]), " / ".join(pm(c) for c in r["coupling_relative"]),
         " / ".join(f"{c['mean']:.4f}" for c in r["coupling_cosine"])]
        for r in summary
    ]  # fmt: skip
    headers = ["network", "loss range", "gradient change", "β-smoothness", "‖gradient‖",
               "ICS ‖G−G′‖/‖G‖, layers 2/3/4", "cos(G, G′)"]  # fmt: skip
    norms = {r["kind"]: r["grad_norm"]["mean"] for r in summary}
    steps = ", ".join(f"{s:g}" for s in STEP_SIZES)
    curves = figure("smoothness.png", "Loss range, gradient change and β-smoothness over training")
    return f"""**Smoothness.** Every {cfg["probe_every"]} steps at rate {cfg["reference_lr"]:g}, on
that step's mini-batch with BN in training mode: from the current weights w, move along the
gradient by η ∈ {{{steps}}} and record the range of the loss (loss landscape), the largest
change of the gradient ‖∇L(w) − ∇L(w − η∇L(w))‖ (gradient predictiveness) and that change per
unit of distance moved (the "effective β-smoothness"). **Coupling** is Santurkar's definition of
internal covariate shift: the change of a layer's gradient G when only the layers before it take
their gradient step (G′). Values are medians over training (mean ± std over seeds).

{table(headers, rows, "lrrrrrr")}
Caveat: the Glorot network's gradient is {norms["plain-glorot"] / norms["bn"]:.1f}× as long as
BN's (median ‖gradient‖), so at equal η BN's weights move less; β-smoothness divides the
distance out, the loss range and the gradient change do not. The default-initialized plain
network spends much of training on its plateau (section 1), where the loss is flat; the Glorot
network is the fair comparison.

{curves}"""
