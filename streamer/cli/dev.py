"""``streamer dev up | down | status``: the embedded stack."""

from __future__ import annotations

from pathlib import Path

import typer

from streamer.cli.base import app, out, plain, settings

dev_app = typer.Typer(help="The embedded stack: a Kafka-compatible broker and redis-server on loopback.")
app.add_typer(dev_app, name="dev")


@dev_app.command("up")
def dev_up() -> None:
    """Start the broker and redis-server (or report the running ones) and write their addresses."""
    from streamer.adapters import devstack

    state_dir = Path(settings().dev.state_dir)
    state, started = devstack.up(state_dir)
    verb = "started" if started else "already running"
    broker, redis = state.broker, state.redis
    out.print(plain(f"broker  {state.kafka_bootstrap}  (pid {broker.pid}, {verb}, ready in {broker.startup_s:.2f} s)"))
    out.print(plain(f"redis   {state.redis_url}  (pid {redis.pid}, {verb}, ready in {redis.startup_s:.2f} s)"))
    out.print(plain(f"state   {state_dir / devstack.STATE_FILE}; logs in {state_dir / 'logs'}"))


@dev_app.command("down")
def dev_down() -> None:
    """Stop the embedded stack (SIGTERM, then SIGKILL after a grace period)."""
    from streamer.adapters import devstack

    stopped = devstack.down(Path(settings().dev.state_dir))
    out.print("stopped broker and redis-server" if stopped else "nothing was running")


@dev_app.command("status")
def dev_status() -> None:
    """Whether the embedded servers run and answer. Exit code 1 when they don't."""
    from streamer.adapters import devstack

    state = devstack.read_state(Path(settings().dev.state_dir))
    if state is None:
        out.print("not running (no state file; start it with `streamer dev up`)")
        raise typer.Exit(1)
    healthy = devstack.health(state)
    for server in (state.broker, state.redis):
        mark = "up" if healthy[server.name] else "DOWN"
        out.print(plain(f"{server.name:<7} {server.address:<28} pid {server.pid:<8} {mark}  log {server.log_path}"))
    if not all(healthy.values()):
        raise typer.Exit(1)
