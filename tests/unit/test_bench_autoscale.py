"""The autoscaling benchmark compares Warren with KEDA at its defaults and tuned as a user would
tune it for this job, so that its table says what the drain-time policy itself buys."""

from __future__ import annotations

from bench.autoscale import SCENARIOS, KedaHpa, contenders, parse_args, simulate


def test_keda_is_there_at_its_defaults_and_tuned_both_ways() -> None:
    scenario = SCENARIOS["spike"]
    kedas = {k.label: k for k in contenders(scenario, parse_args([])) if isinstance(k, KedaHpa)}
    default = kedas["keda default (HPA 15 s, live)"]
    assert (default.down_window, default.scale_up_unlimited, default.mode) == (300, False, "QueueLength")
    tuned = [k for label, k in kedas.items() if "tuned" in label]
    assert {k.mode for k in tuned} == {"QueueLength", "MessageRate"}
    for k in tuned:  # 5 s polling, Warren's 60 s scale-down window, no step limit (Warren's has none)
        assert (k.cache_seconds, k.down_window, k.scale_up_unlimited, k.sync_seconds) == (5, 60, True, 15)
    (rate,) = [k for k in tuned if k.mode == "MessageRate"]
    assert rate.messages_per_replica == 1 / scenario.service_seconds  # one worker's throughput


def test_message_rate_sizes_for_the_publish_rate() -> None:
    scenario = SCENARIOS["spike"]
    (rate,) = [k for k in contenders(scenario, parse_args([])) if isinstance(k, KedaHpa) and k.mode == "MessageRate"]
    run = simulate(rate, scenario, seed=1)
    # 50 msg/s at 2 msg/s per worker: about 25 workers, never the 50 a backlog count reaches
    assert 25 <= max(run.replicas) <= 30
