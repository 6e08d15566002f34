"""Learning under concept drift: the worker's learner (its core maths, replayed offline) against River's SGD and a
batch refit, on three drift shapes over several seeds.

    .venv/bin/python bench/drift.py [--seeds 10] [--sweep] [--floors 0.01,0.02,0.05] [--floors-only]

The stream (one per seed): four standard-normal features; labels from a steep logistic rule (``12 (w.x + b)``)
with 5 % of them flipped. The rule-A model misses ~6 % of labels, the same model under rule B ~63 %.
- ``abrupt``: 900 labels of rule A, then rule B (features 0 and 1 count the other way), 2,700 labels;
- ``gradual``: rule A for 900 labels, then the rule turns in the plane of features 0 and 1 by 4 degrees per
  100 labels (108 degrees by the end of 3,600 labels);
- ``recurring``: A, B, A, B, 900 labels each.
Every learner starts from a logistic fit on 5,000 rule-A rows (the shipped model), standardised as the worker
does. The worker's protocol: chunks of 300 requests, each scored by the current weights, then labelled; the
labels are learnt one after the other (the Lua step is ``core.learner.learn_many``), and the concept-drift
decider (``core.label_monitor``) reads them after each chunk and adapts the learner (``learner.adapted``).

Figures per learner (mean over seeds, per shape):
- ``acc@300``: accuracy of the chunk scored after the first 300 labels of the new concept (after every change
  of a recurring stream, averaged; for the gradual drift, 300 labels into the turn);
- ``holdout→0.95``: new-concept labels until the accuracy on 2,000 held-out rows of the new concept reaches
  0.95 x the pre-drift holdout accuracy, with the decider caught up after every label (the restart result does
  not depend on when the decider runs: it relearns the labels since the detection); ``never`` counts as the
  labels left in the stream;
- ``preq``: prequential accuracy (each label scores the prediction made just before the model learnt it);
- ``delay``: labels from the change to the detector's first detection (abrupt and recurring);
- ``false/10k``: detections per 10,000 labels of a stationary rule-A stream (9,000 labels per seed).
Appends one line to ``bench/results/drift.jsonl``. Pure CPU, a few minutes on 2 cores; figures are means over
seeds, comparable between the rows of one run.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from common import record

from streamer import synthetic
from streamer.core import calibration, learner
from streamer.core.calibration import CalibrationSpec
from streamer.core.concept_drift import DetectorSpec
from streamer.core.label_monitor import LabelMonitor

ROOT_DIR = Path(__file__).resolve().parent.parent
W_A = np.array([2.0, -1.5, 1.2, 0.8])
BIAS = -0.5
STEEPNESS = 12.0
NOISE = 0.05
CHUNK = 300
PHASE = 900
HOLDOUT = 2000


@dataclass(frozen=True)
class Stream:
    x: np.ndarray
    y: np.ndarray
    rules: np.ndarray  # [rows, 4]: the weights of the rule that labelled each row
    changes: tuple[int, ...]  # rows at which a new concept starts


def rotated(w: np.ndarray, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    out = w.copy()
    out[0], out[1] = math.cos(a) * w[0] - math.sin(a) * w[1], math.sin(a) * w[0] + math.cos(a) * w[1]
    return out


def labels_of(x: np.ndarray, rules: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-STEEPNESS * (np.sum(x * rules, axis=1) + BIAS)))
    y = (rng.random(len(x)) < p).astype(np.float64)
    flip = rng.random(len(x)) < NOISE
    return np.where(flip, 1.0 - y, y)


def stream(shape: str, seed: int) -> Stream:
    rng = np.random.default_rng(1000 + seed)
    w_b = W_A * np.array([-1.0, -1.0, 1.0, 1.0])
    if shape == "abrupt":
        rules, changes = np.vstack([np.tile(W_A, (PHASE, 1)), np.tile(w_b, (3 * PHASE, 1))]), (PHASE,)
    elif shape == "gradual":
        turn = [rotated(W_A, 4.0 * max(i - PHASE, 0) / 100.0) for i in range(4 * PHASE)]
        rules, changes = np.array(turn), (PHASE,)
    elif shape == "recurring":
        rules = np.vstack([np.tile(w, (PHASE, 1)) for w in (W_A, w_b, W_A, w_b)])
        changes = (PHASE, 2 * PHASE, 3 * PHASE)
    elif shape == "stationary":
        rules, changes = np.tile(W_A, (10 * PHASE, 1)), ()
    else:
        raise ValueError(shape)
    x = rng.normal(size=(len(rules), 4))
    return Stream(x, labels_of(x, rules, rng), rules, changes)


def start_state(seed: int, params: learner.FtrlParams) -> learner.FtrlState:
    """The shipped model: a logistic fit on 5,000 rule-A rows, taken over by FTRL as the worker does."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5000, 4))
    y = labels_of(x, np.tile(W_A, (5000, 1)), rng)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    fit = LogisticRegression(C=1.0).fit((x - mean) / scale, y)
    return learner.from_weights(fit.coef_[0], float(fit.intercept_[0]), mean, scale, params)


def training_rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5000, 4))
    return x, labels_of(x, np.tile(W_A, (5000, 1)), rng)


def holdout(rule: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(50_000 + seed)
    x = rng.normal(size=(HOLDOUT, 4))
    return x, labels_of(x, np.tile(rule, (HOLDOUT, 1)), rng)


@dataclass(frozen=True)
class Ftrl:
    """The worker's learner: FTRL-Proximal with a concept-drift detector and an adaptation on detection."""

    name: str
    params: learner.FtrlParams
    detector: str = "none"
    on_drift: str = "none"


class FtrlRun:
    def __init__(self, config: Ftrl, seed: int) -> None:
        self.config = config
        self.state = start_state(seed, config.params)
        self.monitor = LabelMonitor(DetectorSpec(kind=config.detector))
        self.seen_x: list[np.ndarray] = []
        self.seen_y: list[float] = []
        self.detections: list[int] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        return learner.predict_proba_many(self.state, x)

    def learn(self, x: np.ndarray, y: float) -> None:
        self.state = learner.learn_many(self.state, x[None, :], np.array([y]))
        self.seen_x.append(x)
        self.seen_y.append(y)

    def decide(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """The decider: the served scores of the labels learnt since its last look, then an adaptation."""
        for found in self.monitor.learn_many(scores, labels, 0.5):
            self.detections.append(found.position)
            if not found.rising:
                continue  # the error rate fell: the model recovered, nothing to adapt to
            since = found.position + 1
            x_since, y_since = np.array(self.seen_x[since:]), np.array(self.seen_y[since:])
            self.state = learner.adapted(self.state, self.config.on_drift, x_since.reshape(-1, 4), y_since)


class SgdRun:
    """River's logistic regression with plain SGD at a constant 0.1, warmed on the shipped model's rows."""

    def __init__(self, seed: int) -> None:
        from river import linear_model, optim

        x, y = training_rows(seed)
        self.mean, self.scale = x.mean(axis=0), x.std(axis=0)
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(0.1))
        for row, label in zip((x - self.mean) / self.scale, y, strict=True):
            self.model.learn_one(dict(enumerate(row.tolist())), bool(label))
        self.detections: list[int] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        w = np.array([self.model.weights.get(i, 0.0) for i in range(4)])
        margin = ((x - self.mean) / self.scale) @ w + self.model.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(margin, -35, 35)))

    def learn(self, x: np.ndarray, y: float) -> None:
        self.model.learn_one(dict(enumerate(((x - self.mean) / self.scale).tolist())), bool(y))

    def decide(self, scores: np.ndarray, labels: np.ndarray) -> None:
        return None


def replay_chunks(run: FtrlRun | SgdRun, s: Stream) -> tuple[list[float], np.ndarray]:
    """The worker's protocol: per chunk, score with the current weights, learn the labels, let the decider look.
    Returns the accuracy of every chunk and the served scores."""
    accuracy, served = [], np.empty(len(s.y))
    for start in range(0, len(s.y), CHUNK):
        x, y = s.x[start : start + CHUNK], s.y[start : start + CHUNK]
        scores = run.predict(x)
        served[start : start + CHUNK] = scores
        accuracy.append(float(np.mean((scores >= 0.5) == (y >= 0.5))))
        for row, label in zip(x, y, strict=True):
            run.learn(row, float(label))
        run.decide(scores, y)
    return accuracy, served


def replay_labels(run: FtrlRun | SgdRun, s: Stream, seed: int) -> tuple[float, list[int]]:
    """Label by label, the decider caught up after each: prequential accuracy and, per change, the labels until
    the holdout accuracy of the new concept reaches 0.95 x the pre-drift one."""
    correct = 0
    recovery: list[int] = []
    targets = {c: holdout(s.rules[c], seed) for c in s.changes}
    pending: tuple[int, float, tuple[np.ndarray, np.ndarray]] | None = None
    for i, (row, label) in enumerate(zip(s.x, s.y, strict=True)):
        if i in targets:
            before = holdout(s.rules[i - 1], seed)
            pre = float(np.mean((run.predict(before[0]) >= 0.5) == (before[1] >= 0.5)))
            if pending is not None:
                recovery.append(i - pending[0])  # never recovered before the next change
            pending = (i, pre, targets[i])
        score = run.predict(row[None, :])
        correct += int((score[0] >= 0.5) == (label >= 0.5))
        run.learn(row, float(label))
        run.decide(score, np.array([label]))
        if pending is not None and (i - pending[0]) % 5 == 4:
            x_h, y_h = pending[2]
            if np.mean((run.predict(x_h) >= 0.5) == (y_h >= 0.5)) >= 0.95 * pending[1]:
                recovery.append(i + 1 - pending[0])
                pending = None
    if pending is not None:
        recovery.append(len(s.y) - pending[0])
    return correct / len(s.y), recovery


def batch_refit(s: Stream, seed: int, shape: str) -> tuple[list[float], list[int]]:
    """The yardstick: a logistic fit on all labels of the current concept so far (gradual: the last 300)."""
    from sklearn.linear_model import LogisticRegression

    def fit(lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
        x, y = s.x[lo:hi], s.y[lo:hi]
        if len(set(y.tolist())) < 2:
            return lambda rows: np.full(len(rows), float(y[0] >= 0.5) if len(y) else 0.5)
        model = LogisticRegression(C=1.0).fit(x, y)
        return lambda rows: model.predict_proba(rows)[:, 1]

    after, recovery = [], []
    for c in s.changes:
        predict = fit(c, c + CHUNK)  # the first 300 labels of the new concept (gradual: of the turn)
        x, y = s.x[c + CHUNK : c + 2 * CHUNK], s.y[c + CHUNK : c + 2 * CHUNK]
        after.append(float(np.mean((predict(x) >= 0.5) == (y >= 0.5))))
        if shape == "gradual":
            continue
        x_pre, y_pre = holdout(s.rules[c - 1], seed)
        pre_fit = fit(max(0, c - PHASE), c)
        pre = float(np.mean((pre_fit(x_pre) >= 0.5) == (y_pre >= 0.5)))
        x_h, y_h = holdout(s.rules[c], seed)
        for k in range(10, PHASE + 1, 5):
            if np.mean((fit(c, c + k)(x_h) >= 0.5) == (y_h >= 0.5)) >= 0.95 * pre:
                recovery.append(k)
                break
        else:
            recovery.append(PHASE)
    return after, recovery


def after_300(accuracy: list[float], s: Stream) -> list[float]:
    return [accuracy[(c + CHUNK) // CHUNK] for c in s.changes]


def measure(make: Callable[[int], FtrlRun | SgdRun], shape: str, seeds: int) -> dict[str, float]:
    acc300, recovery, preq, delays, served = [], [], [], [], []
    for seed in range(seeds):
        s = stream(shape, seed)
        run = make(seed)
        accuracy, _ = replay_chunks(run, s)
        acc300 += after_300(accuracy, s)
        served.append(float(np.mean(accuracy)))
        for c in s.changes:
            later = [d for d in run.detections if d >= c]
            if later and (shape == "abrupt" or later[0] < c + PHASE):
                delays.append(later[0] - c)
        if shape != "gradual":
            p, rec = replay_labels(make(seed), s, seed)
        else:
            p, rec = replay_labels(make(seed), s, seed)[0], []
        preq.append(p)
        recovery += rec
    return {
        "acc@300": float(np.mean(acc300)),
        "holdout→0.95": float(np.mean(recovery)) if recovery else math.nan,
        "preq": float(np.mean(preq)),
        "served": float(np.mean(served)),
        "delay": float(np.mean(delays)) if delays else math.nan,
        "delay_max": float(np.max(delays)) if delays else math.nan,
    }


def stationary(config: Ftrl, seeds: int) -> dict[str, float]:
    """False alarms per 10,000 labels and the served accuracy on a stream that never changes."""
    alarms, labels, accuracy = 0, 0, []
    for seed in range(seeds):
        s = stream("stationary", seed)
        run = FtrlRun(config, seed)
        accuracy += replay_chunks(run, s)[0]
        alarms += len(run.detections)
        labels += len(s.y)
    return {"false/10k": 10_000 * alarms / labels, "served": float(np.mean(accuracy))}


TODAY = learner.FtrlParams(alpha=0.1, beta=1.0, l1=0.0, l2=1.0)

# ------------------------------------------------------------------- calibration of the shipped frozen model

DEMO_CHUNK, DEMO_CHUNKS = 250, 16  # make demo's act 2: the rule changes after 8 chunks


class FrozenRun:
    """The shipped GBDT (``models/fraud/1``), optionally behind a calibration stage learnt online."""

    def __init__(self, spec: CalibrationSpec | None, detector: str = "adwin") -> None:
        from streamer.adapters import model_repository

        self.model = model_repository.load_version(ROOT_DIR / "models" / "fraud" / "1")
        self.spec = spec
        self.state = calibration.initial(spec) if spec is not None else None
        self.monitor = LabelMonitor(DetectorSpec(kind=detector))
        self.seen: list[tuple[float, np.ndarray, float]] = []

    def frozen(self, x: np.ndarray) -> np.ndarray:
        return self.model.session.run(None, {"float_input": x.astype(np.float32)})[1][:, 1].astype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        p = self.frozen(x)
        if self.spec is None or self.state is None:
            return p
        return calibration.score_many(self.state, p, x, self.spec)

    def learn_chunk(self, x: np.ndarray, y: np.ndarray, served: np.ndarray) -> None:
        if self.spec is None or self.state is None:
            return
        p = self.frozen(x)
        start = len(self.seen)
        self.seen += list(zip(p.tolist(), x, y.tolist(), strict=True))
        self.state = calibration.learn_many(self.state, p, x, y, self.spec)
        for found in self.monitor.learn_many(served, y, 0.5):
            if not found.rising or self.spec.on_drift == "none":
                continue
            since = self.seen[found.position + 1 :]
            state = learner.restart(self.state) if self.spec.on_drift == "restart" else self.state
            if self.spec.on_drift == "restart" and since:
                ps, xs, ys = (np.array([s[i] for s in since]) for i in range(3))
                state = calibration.learn_many(state, ps, xs, ys, self.spec)
            elif self.spec.on_drift == "reset-rates":
                state = learner.reset_rates(self.state)
            self.state = state
        del start


class OnlineExampleRun:
    """The shipped online example (``examples/models/fraud-online/1``) with given learner parameters."""

    def __init__(self, params: learner.FtrlParams, on_drift: str) -> None:
        from streamer.adapters import model_repository, online

        model = model_repository.load_version(ROOT_DIR / "examples" / "models" / "fraud-online" / "1")
        spec, start = online.spec_of(model)
        self.state = learner.FtrlState(start.z, start.n, spec.mean, spec.scale, params)
        self.state = learner.from_weights(
            learner.weights(start)[:-1], float(learner.weights(start)[-1]), spec.mean, spec.scale, params
        )
        self.on_drift = on_drift
        self.monitor = LabelMonitor(DetectorSpec())
        self.xs: list[np.ndarray] = []
        self.ys: list[float] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        return learner.predict_proba_many(self.state, x)

    def learn_chunk(self, x: np.ndarray, y: np.ndarray, served: np.ndarray) -> None:
        self.xs += list(x)
        self.ys += y.tolist()
        self.state = learner.learn_many(self.state, x, y.astype(np.float64))
        for found in self.monitor.learn_many(served, y, 0.5):
            if found.rising:
                since = slice(found.position + 1, None)
                xs = np.array(self.xs[since]).reshape(-1, x.shape[1])
                self.state = learner.adapted(self.state, self.on_drift, xs, np.array(self.ys[since], dtype=float))


def calibration_bench(seeds: int) -> dict[str, dict[str, float]]:
    """make demo's act 2 replayed: accuracy per chunk of 250 after the drift, frozen vs calibrated vs online."""
    train = synthetic.transactions(40000, seed=synthetic.SEED)
    mean, scale = train.mean(axis=0), train.std(axis=0)
    every = tuple(range(len(synthetic.FEATURES)))

    def spec(columns: tuple[int, ...], on_drift: str = "restart") -> CalibrationSpec:
        return CalibrationSpec(
            columns, tuple(mean[list(columns)].tolist()), tuple(scale[list(columns)].tolist()), on_drift=on_drift
        )

    runs: dict[str, Callable[[], FrozenRun | OnlineExampleRun]] = {
        "frozen fraud@1 (GBDT)": lambda: FrozenRun(None),
        "fraud@1 + calibration (logit only)": lambda: FrozenRun(spec(())),
        "fraud@1 + calibration (logit + 6 features)": lambda: FrozenRun(spec(every)),
        "fraud@1 + calibration (logit + 6 features), on_drift none": lambda: FrozenRun(spec(every, "none")),
        "fraud-online@1, its card (a0.3 l2 1), no adaptation": lambda: OnlineExampleRun(
            learner.FtrlParams(0.3, 1.0, 0.0, 1.0), "none"
        ),
        "fraud-online@1, defaults + restart": lambda: OnlineExampleRun(learner.FtrlParams(), "restart"),
    }
    results: dict[str, dict[str, float]] = {}
    for name, make in runs.items():
        before, first, second, after = [], [], [], []
        for seed in range(seeds):
            x = synthetic.transactions(DEMO_CHUNK * DEMO_CHUNKS, seed=100 + seed)
            drift_at = DEMO_CHUNKS // 2 * DEMO_CHUNK
            rule = np.where(np.arange(len(x)) < drift_at, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
            y = synthetic.labels_of(rule, seed=3 + seed).astype(np.float64)
            run = make()
            accuracy = []
            for c in range(DEMO_CHUNKS):
                rows = slice(c * DEMO_CHUNK, (c + 1) * DEMO_CHUNK)
                served = run.predict(x[rows])
                accuracy.append(float(np.mean((served >= 0.5) == (y[rows] >= 0.5))))
                run.learn_chunk(x[rows], y[rows], served)
            half = DEMO_CHUNKS // 2
            before.append(np.mean(accuracy[:half]))
            first.append(accuracy[half + 1])  # scored after 250 new-concept labels
            second.append(accuracy[half + 2])  # after 500
            after.append(np.mean(accuracy[half:]))
        results[name] = {
            "before": float(np.mean(before)),
            "acc@250": float(np.mean(first)),
            "acc@500": float(np.mean(second)),
            "after": float(np.mean(after)),
        }
        print(name, results[name], file=sys.stderr, flush=True)
    print("\ncalibration (make demo act 2: chunks of 250, the rule changes after 2,000 transactions)")
    print("| model | accuracy before | chunk after 250 labels | after 500 | mean after the drift |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['before']:.3f} | {r['acc@250']:.3f} | {r['acc@500']:.3f} | {r['after']:.3f} |")
    return results


FAST = learner.FtrlParams(alpha=0.5, beta=1.0, l1=0.0, l2=0.5)  # faster alone, noisier when nothing changes


def floor_rows(defaults: learner.FtrlParams, floors: list[float]) -> list[Ftrl]:
    """The learning-rate floor (``rate_floor``) at the default alpha/l2: alone, with ADWIN and a restart, and with
    ADWIN and reset-rates (a floor keeps the reset rates from decaying back)."""
    rows = []
    for floor in floors:
        params = replace(defaults, rate_floor=floor)
        rows.append(Ftrl(f"ftrl defaults, rate_floor {floor}, no detector", params))
        rows.append(Ftrl(f"ftrl defaults, rate_floor {floor} + adwin restart", params, "adwin", "restart"))
        rows.append(Ftrl(f"ftrl defaults, rate_floor {floor} + adwin reset-rates", params, "adwin", "reset-rates"))
    return rows


def configs(defaults: learner.FtrlParams, sweep: bool, floors: list[float], only_floors: bool = False) -> list[Ftrl]:
    rows = [
        Ftrl("ftrl a0.1 l2 1 (0.1.0: no detector)", TODAY),
        Ftrl("ftrl defaults + adwin restart (0.2.0)", defaults, "adwin", "restart"),
        Ftrl("ftrl defaults + adwin reset-rates", defaults, "adwin", "reset-rates"),
    ]
    if only_floors:
        return rows + floor_rows(defaults, floors)
    rows += [
        Ftrl("ftrl defaults + page-hinkley restart", defaults, "page-hinkley", "restart"),
        Ftrl("ftrl a0.5 l2 0.5, no detector", FAST),
        Ftrl("ftrl a0.5 l2 0.5 + adwin restart", FAST, "adwin", "restart"),
        Ftrl("ftrl a0.5 l2 0.5 + adwin reset-rates", FAST, "adwin", "reset-rates"),
        *floor_rows(defaults, floors),
    ]
    if sweep:
        for alpha in (0.1, 0.15, 0.2, 0.25, 0.5, 1.0):
            for l2 in (1.0, 0.5):
                params = replace(defaults, alpha=alpha, l2=l2)
                rows.append(Ftrl(f"sweep a{alpha} l2 {l2} + adwin restart", params, "adwin", "restart"))
                rows.append(Ftrl(f"sweep a{alpha} l2 {l2} + adwin reset-rates", params, "adwin", "reset-rates"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--shapes", default="abrupt,gradual,recurring")
    parser.add_argument("--sweep", action="store_true", help="also sweep alpha and l2 (slow)")
    parser.add_argument("--no-river", action="store_true", help="skip River's SGD")
    parser.add_argument("--calibration-only", action="store_true", help="only the calibration of the shipped GBDT")
    parser.add_argument(
        "--floors", default="0.01,0.02,0.05", help="rate_floor values to measure (comma-separated; '' for none)"
    )
    parser.add_argument(
        "--floors-only", action="store_true", help="only the rate_floor rows and the rows they are compared with"
    )
    args = parser.parse_args()
    floors = [float(f) for f in args.floors.split(",") if f]
    if args.calibration_only:
        record("drift", {"seeds": args.seeds, "calibration": calibration_bench(args.seeds)})
        return
    defaults = learner.FtrlParams()
    shapes = args.shapes.split(",")
    results: dict[str, dict[str, dict[str, float]]] = {}
    rows: list[tuple[str, Callable[[int], FtrlRun | SgdRun]]] = []
    every = configs(defaults, args.sweep, floors, args.floors_only)
    for config in every:
        rows.append((config.name, lambda seed, c=config: FtrlRun(c, seed)))
    if not args.no_river and not args.floors_only:
        rows.append(("river SGD 0.1, warm", SgdRun))
    for name, make in rows:
        results[name] = {shape: measure(make, shape, args.seeds) for shape in shapes}
        config = next((c for c in every if c.name == name), None)
        if config is not None:
            results[name]["stationary"] = stationary(config, args.seeds)
        print(name, results[name], file=sys.stderr, flush=True)
    for shape in shapes:
        after, recovery = [], []
        for seed in range(args.seeds):
            a, r = batch_refit(stream(shape, seed), seed, shape)
            after += a
            recovery += r
        results.setdefault("batch refit (yardstick)", {})[shape] = {
            "acc@300": float(np.mean(after)),
            "holdout→0.95": float(np.mean(recovery)) if recovery else math.nan,
        }
    print_table(results, shapes)
    calibrated = {} if args.floors_only else calibration_bench(args.seeds)
    record(
        "drift",
        {"seeds": args.seeds, "defaults": vars_of(defaults), "results": results, "calibration": calibrated},
    )


def vars_of(params: learner.FtrlParams) -> dict[str, float]:
    return {"alpha": params.alpha, "beta": params.beta, "l1": params.l1, "l2": params.l2, "floor": params.rate_floor}


def print_table(results: dict[str, dict[str, dict[str, float]]], shapes: list[str]) -> None:
    def cell(value: float | None, fmt: str) -> str:
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    for shape in shapes:
        print(f"\n{shape}")
        print("| learner | acc@300 | holdout→0.95 | preq | served | delay (max) | false/10k | stationary served |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, by_shape in results.items():
            r = by_shape.get(shape, {})
            false = by_shape.get("stationary", {}).get("false/10k")
            still = by_shape.get("stationary", {}).get("served")
            delay = f"{cell(r.get('delay'), '.0f')} ({cell(r.get('delay_max'), '.0f')})"
            print(
                f"| {name} | {cell(r.get('acc@300'), '.3f')} | {cell(r.get('holdout→0.95'), '.0f')} | "
                f"{cell(r.get('preq'), '.3f')} | {cell(r.get('served'), '.3f')} | {delay} | {cell(false, '.2f')} | "
                f"{cell(still, '.3f')} |"
            )


if __name__ == "__main__":
    main()
