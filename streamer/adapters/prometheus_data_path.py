"""The data path's observer (``pipeline.PipelineObserver``): whole batches in, a few metric updates out.

Everything here runs on the pipeline's event loop once per batch (``on_inference`` once per model call, from
the scoring threads), so no hook does Python work per row: histograms take a batch through
``observe_many``, predicted classes are counted with ``np.unique``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from streamer.adapters.prometheus_families import SHADOW_OUTCOMES, MetricFamilies
from streamer.core.ledger import Batch, Release
from streamer.core.output_records import OutputRecords
from streamer.core.scoring import ScoredBatch, outcome_counts, sent_scores


class DataPathHooks(MetricFamilies):
    def on_scored(self, batches: Sequence[Batch], scored: Sequence[ScoredBatch], scoring_s: float) -> None:
        self.batch_size.observe_many(np.array([len(b.records) for b in batches], dtype=np.float64))
        self.batch_wait.observe_many(np.array([b.wait_s for b in batches], dtype=np.float64))
        self.batch_scoring.observe(scoring_s)
        for batch in scored:
            for stats in batch.stages:
                self.stage_rows.labels(stats.graph, stats.stage).inc(stats.rows)
                self.stage_seconds.labels(stats.graph, stats.stage).inc(stats.seconds)
                if stats.misses:
                    self.enrichment_misses.labels(stats.graph, stats.stage).inc(stats.misses)
                if stats.failed:
                    self.enrichment_failures.labels(stats.graph, stats.stage).inc()
                if stats.failed_rows:
                    failed_rows = self.enrichment_failed_rows.labels(stats.graph, stats.stage, stats.on_failure)
                    failed_rows.inc(stats.failed_rows)

    def on_released(self, release: Release[ScoredBatch], out: OutputRecords) -> None:
        scored, sent = release.result, release.send
        requests, reasons = outcome_counts(scored, sent)
        for (model, version, outcome), count in requests.items():
            self.requests.labels(model, version, outcome).inc(count)
        for reason, count in reasons.items():
            self.dead_letters.labels(reason).inc(count)
        for summary in scored.models:
            name, version = summary.card.name, str(summary.card.version)
            scores, labels = sent_scores(summary, sent)
            self.scores.labels(name, version).observe_many(scores)
            if labels is not None and labels.size:
                classes, counts = np.unique(labels, return_counts=True)
                for value, count in zip(classes.tolist(), counts.tolist(), strict=True):
                    self.labels_predicted.labels(name, version, str(value)).inc(count)
        self.latency.observe_many(np.maximum(out.latencies_ms, 0.0) / 1000.0)
        if scored.shadow is not None:
            shadow_requests, _ = outcome_counts(scored.shadow, sent)
            for (model, version, outcome), count in shadow_requests.items():
                if model:  # rows the challenger never saw (the champion failed them) are not its outcomes
                    self.shadow_predictions.labels(model, version, SHADOW_OUTCOMES[outcome]).inc(count)
        if out.cut:
            self.cut_dead_letters.inc(out.cut)

    def on_skipped(self, partition: int, count: int) -> None:
        self.skipped.labels(str(partition)).inc(count)

    def _partition(self, partition: int) -> None:
        """A partition's counters start at 0 the first time it is reported."""
        if partition not in self._partitions:
            self._partitions.add(partition)
            self.skipped.labels(str(partition))
            self.stalls.labels(str(partition))

    def on_depth(self, partition: int, rows: int) -> None:
        self._partition(partition)
        self.reorder_depth.labels(str(partition)).set(rows)

    def on_inflight(self, jobs: int) -> None:
        self.inflight.set(jobs)

    def on_lag(self, partition: int, messages: int) -> None:
        self._partition(partition)
        self.lag.labels(str(partition)).set(messages)

    def on_partitions_gone(self, partitions: Sequence[int]) -> None:
        """Revoked or lost: this worker's gauges of the partition go (its next owner reports them), so that a sum
        over workers -- the lag alert, an autoscaler -- counts each partition once. Its counters stay (monotonic
        per worker, and the partition may come back)."""
        for partition in partitions:
            for gauge in (self.lag, self.reorder_depth):
                with contextlib.suppress(KeyError):  # never reported by this worker
                    gauge.remove(str(partition))

    def on_stalled(self, partition: int, seconds: float) -> None:
        self.stalls.labels(str(partition)).inc()

    def on_stage(self, stage: str, seconds: float) -> None:
        self.stage_series[stage].observe(seconds)

    def on_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def on_inference(self, model: str, version: str, seconds: float) -> None:
        self.inference.labels(model, version).observe(seconds)
