"""Autoscaling simulation: a day of requests through KEDA's Kafka scaler and the HPA, per threshold and window.

    .venv/bin/python bench/autoscale.py [--capacity ROWS_PER_S] [--pause-s S] [--start-s S] [--bound-s 10]

No cluster runs here, so the shipped ``lagThreshold`` and scale-down window are chosen by replaying a day-shaped
request rate (a diurnal curve, low at 04:00 and high at 16:00, with a 15-minute burst over the partitions'
capacity at 19:00) through the documented algorithms, second by second:

- **the scaler** (KEDA's Kafka scaler): every ``pollingInterval`` it reads the group's committed lag summed over
  the partitions, capped at ``partitions x lagThreshold`` (``allowIdleConsumers: false``); the workers commit
  once a second, so the committed lag also holds what was scored since the last commit;
- **the HPA** (every 15 s): ``desired = ceil(lag / lagThreshold)`` (an ``AverageValue`` target), no change within
  the 10 % tolerance, clamped to [min, max]; scale-up and scale-down stabilisation windows (the highest
  recommendation of the down window wins) and rate policies (``selectPolicy: Max``), as the ScaledObject sets;
- **the workers**: each serves ``capacity`` rows/s split over the partitions it holds (range assignment: with 8
  partitions, 5 to 7 workers serve no more than 4, since one of them holds 2); a new pod helps only
  ``start_s`` after it was created; every join or leave is a rebalance that stops all scoring for ``pause_s``.

``capacity``, ``pause_s`` and the worker's start come from the real run (``bench/scale_steps.py``, its last line
in ``bench/results/scale_steps.jsonl``) unless given. Reported per setting: replicas over the day (every change,
and 15-minute means), rebalances, time the backlog's wait stays above ``--bound-s``, the largest wait and lag,
replica-hours and idle replica-hours (replicas beyond the fewest whose capacity covers the rate of that second).
Results go to ``bench/results/autoscale.jsonl``; the row marked ``shipped`` is the ScaledObject's
(deploy/kubernetes/keda/scaledobject.yaml).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tomllib
from dataclasses import asdict, dataclass, field

import yaml
from common import ROOT, record

DAY_S = 86_400
HPA_SYNC_S = 15  # the controller manager's --horizontal-pod-autoscaler-sync-period default
TOLERANCE = 0.1  # the HPA's --horizontal-pod-autoscaler-tolerance default
COMMIT_INTERVAL_S = 1.0  # both engines commit what the ledgers allow once a second
K8S = ROOT / "deploy" / "kubernetes"


@dataclass(frozen=True)
class Setting:
    lag_threshold: int
    scale_down_window_s: int
    scale_up_window_s: int = 0
    polling_interval_s: int = 15
    min_replicas: int = 2
    max_replicas: int = 8
    scale_up: tuple[tuple[str, int, int], ...] = (("Percent", 100, 15),)
    scale_down: tuple[tuple[str, int, int], ...] = (("Pods", 1, 60),)
    allow_idle: bool = False
    shipped: bool = False


def shipped_setting() -> tuple[Setting, int]:
    """The ScaledObject's setting, and the partition count the manifests configure."""
    spec = yaml.safe_load((K8S / "keda" / "scaledobject.yaml").read_text())["spec"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    [trigger] = spec["triggers"]

    def policies(rules: dict) -> tuple[tuple[str, int, int], ...]:
        return tuple((p["type"], p["value"], p["periodSeconds"]) for p in rules["policies"])

    setting = Setting(
        lag_threshold=int(trigger["metadata"]["lagThreshold"]),
        scale_down_window_s=behavior["scaleDown"]["stabilizationWindowSeconds"],
        scale_up_window_s=behavior["scaleUp"]["stabilizationWindowSeconds"],
        polling_interval_s=spec["pollingInterval"],
        min_replicas=spec["minReplicaCount"],
        max_replicas=spec["maxReplicaCount"],
        scale_up=policies(behavior["scaleUp"]),
        scale_down=policies(behavior["scaleDown"]),
        allow_idle=trigger["metadata"].get("allowIdleConsumers") == "true",
        shipped=True,
    )
    partitions = tomllib.loads((K8S / "base" / "streamer.toml").read_text())["kafka"]["partitions"]
    return setting, partitions


def measured() -> dict:
    """The last real run of bench/scale_steps.py."""
    path = ROOT / "bench" / "results" / "scale_steps.jsonl"
    if not path.exists():
        raise SystemExit("no bench/results/scale_steps.jsonl: run bench/scale_steps.py, or give --capacity etc.")
    return json.loads(path.read_text().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ the day


def day_rate(peak: float, seed: int = 7) -> list[float]:
    """Requests/s for every second of a day: a diurnal curve (15 % of peak at 04:00, peak at 16:00), minute-level
    noise of 5 %, and a burst of +60 % of peak from 19:00 for 15 minutes (1-minute ramps)."""
    rng = random.Random(seed)
    noise = [math.exp(rng.gauss(0, 0.05)) for _ in range(DAY_S // 60 + 1)]
    rates = []
    for t in range(DAY_S):
        phase = 0.5 - 0.5 * math.cos(2 * math.pi * (t - 4 * 3600) / DAY_S)
        rate = peak * (0.15 + 0.85 * phase**1.5) * noise[t // 60]
        burst_t = t - 19 * 3600
        if 0 <= burst_t < 15 * 60:
            rate += 0.6 * peak * min(1.0, burst_t / 60, (15 * 60 - burst_t) / 60)
        rates.append(rate)
    return rates


def shares(members: int, partitions: int) -> list[int]:
    """Partitions per member under range assignment (members beyond the partitions hold none)."""
    q, r = divmod(partitions, members)
    return [q + 1 if i < r else q for i in range(members)]


def capacity_of(members: int, partitions: int, capacity: float) -> float:
    """Rows/s a group can serve when the load is spread evenly over the partitions: the busiest member bounds it."""
    if members == 0:
        return 0.0
    return capacity * partitions / max(shares(members, partitions))


# ------------------------------------------------------------------------------------------------ the loop


@dataclass
class Result:
    setting: dict
    rebalances: int = 0
    paused_s: int = 0
    wait_above_bound_s: int = 0
    max_wait_s: float = 0.0
    max_lag: int = 0
    replica_hours: float = 0.0
    idle_replica_hours: float = 0.0
    replicas_without_partitions_hours: float = 0.0
    scale_events: list[tuple[int, int]] = field(default_factory=list)
    replicas_per_15min: list[float] = field(default_factory=list)


def simulate(
    setting: Setting,
    rates: list[float],
    partitions: int,
    capacity: float,
    pause_s: float,
    start_s: float,
    bound_s: float,
    seed: int = 11,
) -> Result:
    rng = random.Random(seed)
    result = Result(setting=asdict(setting))
    backlog = [0.0] * partitions
    replicas = setting.min_replicas  # the Deployment's spec.replicas, which the HPA sets
    ready_at: list[float] = [0.0] * replicas  # per pod: when it joins the group (0: already in)
    paused_until = -1.0
    scaled: list[tuple[int, int]] = []  # (time, change) of the HPA's scale events, for the rate policies
    recommendations: list[tuple[int, int]] = []
    seen_lag = 0.0
    served_rate = 0.0
    window_sum = 0.0
    cap_replicas = setting.max_replicas if setting.allow_idle else min(setting.max_replicas, partitions)
    for t, rate in enumerate(rates):
        # pods that finished starting join: one rebalance for all that join in the same second
        joining = [i for i, ready in enumerate(ready_at) if ready and ready <= t]
        if joining:
            for i in joining:
                ready_at[i] = 0.0
            paused_until = max(paused_until, t + pause_s)
            result.rebalances += 1
        members = sum(1 for ready in ready_at if ready == 0.0)
        # serve
        served_total = 0.0
        load = rate / partitions
        if t >= paused_until and members:
            per_member = shares(members, partitions)
            p = 0
            for held in per_member:
                for _ in range(held):
                    served = min(backlog[p] + load, capacity / held)
                    backlog[p] += load - served
                    served_total += served
                    p += 1
        else:
            backlog = [b + load for b in backlog]
        if t < paused_until:
            result.paused_s += 1
        served_rate = served_total
        lag = sum(backlog)
        group_capacity = capacity_of(min(members, partitions), partitions, capacity)
        wait = lag / group_capacity if group_capacity else (float("inf") if lag > 1 else 0.0)
        if wait > bound_s:
            result.wait_above_bound_s += 1
        result.max_wait_s = max(result.max_wait_s, min(wait, 1e9))
        result.max_lag = max(result.max_lag, int(lag))
        # the scaler: committed lag, read every pollingInterval
        if t % setting.polling_interval_s == 0:
            seen_lag = lag + served_rate * rng.uniform(0, COMMIT_INTERVAL_S)
        # the HPA
        if t % HPA_SYNC_S == 0:
            metric = seen_lag if setting.allow_idle else min(seen_lag, partitions * setting.lag_threshold)
            ratio = metric / (setting.lag_threshold * replicas)
            recommendation = replicas if abs(ratio - 1) <= TOLERANCE else math.ceil(metric / setting.lag_threshold)
            recommendation = max(setting.min_replicas, min(recommendation, setting.max_replicas))
            recommendations.append((t, recommendation))
            keep = max(setting.scale_down_window_s, setting.scale_up_window_s)
            recommendations = [(s, r) for s, r in recommendations if t - s <= keep]
            # scale up only to what every recommendation of the up window allows, down only to the highest of
            # the down window
            up = min(r for s, r in recommendations if t - s <= setting.scale_up_window_s)
            down = max(r for s, r in recommendations if t - s <= setting.scale_down_window_s)
            desired = up if up > replicas else (down if down < replicas else replicas)
            if desired > replicas:
                limits = []
                for kind, value, period in setting.scale_up:
                    start = replicas - sum(c for s, c in scaled if c > 0 and t - s < period)
                    limits.append(start + value if kind == "Pods" else math.ceil(start * (1 + value / 100)))
                desired = min(desired, max(limits))
            elif desired < replicas:
                limits = []
                for kind, value, period in setting.scale_down:
                    start = replicas - sum(c for s, c in scaled if c < 0 and t - s < period)
                    limits.append(start - value if kind == "Pods" else math.ceil(start * (1 - value / 100)))
                desired = max(desired, min(limits))
            desired = max(setting.min_replicas, min(desired, setting.max_replicas))
            if desired != replicas:
                scaled.append((t, desired - replicas))
                result.scale_events.append((t, desired))
                if desired > replicas:
                    ready_at += [t + start_s] * (desired - replicas)
                else:
                    # pods still starting go first (no rebalance); each running one leaves the group
                    for _ in range(replicas - desired):
                        starting = [i for i, ready in enumerate(ready_at) if ready]
                        leaving = starting[-1] if starting else len(ready_at) - 1
                        if not ready_at[leaving]:
                            paused_until = max(paused_until, t + pause_s)
                            result.rebalances += 1
                        ready_at.pop(leaving)
                replicas = desired
        # accounting
        needed = next(
            (n for n in range(1, cap_replicas + 1) if capacity_of(n, partitions, capacity) >= rate), cap_replicas
        )
        result.replica_hours += replicas / 3600
        result.idle_replica_hours += max(0, replicas - needed) / 3600
        result.replicas_without_partitions_hours += max(0, replicas - partitions) / 3600
        window_sum += replicas
        if (t + 1) % 900 == 0:
            result.replicas_per_15min.append(round(window_sum / 900, 2))
            window_sum = 0.0
    for name in ("replica_hours", "idle_replica_hours", "replicas_without_partitions_hours", "max_wait_s"):
        setattr(result, name, round(getattr(result, name), 2))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=float, help="rows/s per worker (default: the last scale_steps run)")
    parser.add_argument("--pause-s", type=float, help="stop of all scoring per rebalance (default: measured)")
    parser.add_argument("--start-s", type=float, help="pod creation to joining the group (default: measured + 10)")
    parser.add_argument("--bound-s", type=float, default=10.0, help="the wait (lag / capacity) not to exceed")
    parser.add_argument("--thresholds", default="1,2,4", help="lag thresholds to compare, in worker-seconds of rows")
    parser.add_argument("--down-windows", default="300,1800,3600", help="scale-down stabilisation windows (s)")
    parser.add_argument("--up-windows", default="0,30", help="scale-up stabilisation windows (s)")
    parser.add_argument("--peak-utilisation", type=float, default=0.75, help="peak rate / the partitions' capacity")
    args = parser.parse_args()
    shipped, partitions = shipped_setting()
    run = None if args.capacity and args.pause_s is not None and args.start_s is not None else measured()
    capacity = args.capacity or run["phases"][0]["rows_per_s_per_worker"]
    pauses = [p["pause_s"] for p in (run["phases"] if run else []) if p["pause_s"] is not None]
    pause_s = args.pause_s if args.pause_s is not None else max(pauses)
    # + 10 s: scheduling and container creation on a node that has the image (not measurable here)
    start_s = args.start_s if args.start_s is not None else run["phases"][0]["join_s"] + 10
    rates = day_rate(args.peak_utilisation * partitions * capacity)
    one_s = capacity  # a threshold of one worker-second of rows
    settings = [
        Setting(
            int(round(k * one_s, -2)), down, up, shipped.polling_interval_s, shipped.min_replicas, shipped.max_replicas
        )
        for k in map(float, args.thresholds.split(","))
        for down in map(int, args.down_windows.split(","))
        for up in map(int, args.up_windows.split(","))
    ]
    key = (shipped.lag_threshold, shipped.scale_down_window_s, shipped.scale_up_window_s)
    settings = [s for s in settings if (s.lag_threshold, s.scale_down_window_s, s.scale_up_window_s) != key]
    settings.append(shipped)
    # what maxReplicaCount above the partitions (allowIdleConsumers: true) would cost
    settings.append(
        Setting(
            shipped.lag_threshold,
            shipped.scale_down_window_s,
            shipped.scale_up_window_s,
            shipped.polling_interval_s,
            shipped.min_replicas,
            2 * partitions,
            shipped.scale_up,
            shipped.scale_down,
            allow_idle=True,
        )
    )
    # no autoscaling: every partition's worker all day (the floor of the wait, the ceiling of the cost)
    settings.append(
        Setting(
            shipped.lag_threshold,
            shipped.scale_down_window_s,
            shipped.scale_up_window_s,
            shipped.polling_interval_s,
            partitions,
            partitions,
        )
    )
    results = [simulate(s, rates, partitions, capacity, pause_s, start_s, args.bound_s) for s in settings]
    print(
        f"\none simulated day: {partitions} partitions, {capacity:,.0f} rows/s per worker, peak "
        f"{max(rates):,.0f} rows/s (the partitions' capacity: {partitions * capacity:,.0f}), rebalance pause "
        f"{pause_s:.1f} s, pod start {start_s:.1f} s, wait bound {args.bound_s:g} s\n"
    )
    head = (
        "threshold",
        "down s",
        "up s",
        "max",
        "rebalances",
        "paused s",
        f"wait>{args.bound_s:g}s",
        "max wait s",
        "replica-h",
        "idle rep-h",
        "no-partition rep-h",
    )
    widths = (10, 7, 5, 5, 11, 9, 10, 11, 10, 11, 19)
    print("".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for r in results:
        s = r.setting
        cells = (
            f"{s['lag_threshold']:,}",
            s["scale_down_window_s"],
            s["scale_up_window_s"],
            s["max_replicas"],
            r.rebalances,
            r.paused_s,
            r.wait_above_bound_s,
            f"{r.max_wait_s:.1f}",
            r.replica_hours,
            r.idle_replica_hours,
            r.replicas_without_partitions_hours,
        )
        mark = "  <- shipped" if s["shipped"] else "  (static)" if s["min_replicas"] == s["max_replicas"] else ""
        print("".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)) + mark)
    record(
        "autoscale",
        {
            "partitions": partitions,
            "capacity_rows_per_s": capacity,
            "pause_s": pause_s,
            "start_s": start_s,
            "bound_s": args.bound_s,
            "peak_rows_per_s": round(max(rates)),
            "source": "bench/results/scale_steps.jsonl (last line)" if run else "command line",
            "rows": [asdict(r) for r in results],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
