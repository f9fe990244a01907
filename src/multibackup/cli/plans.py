"""``multibackup plan list|run|status``: the plans of the config file."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from multibackup.cli.output import Printer, human_bytes
from multibackup.engine.progress import Progress
from multibackup.store.lag import LagRecord

if TYPE_CHECKING:  # config and plans are imported by the plan commands, not at start
    from multibackup.config import Config


def _config(args: argparse.Namespace) -> Config:
    from multibackup.config import load_config

    return load_config(args.config)


def _policy_text(policy: dict[str, Any] | None) -> str:
    if not policy:
        return "keep everything"
    return ", ".join(f"{k.removeprefix('keep_')} {v}" for k, v in policy.items())


def cmd_plan_list(args: argparse.Namespace, out: Printer) -> int:
    config = _config(args)
    from multibackup.config import describe_plans

    plans = describe_plans(config)
    if out.json:
        out.emit(plans)
        return 0
    if not plans:
        out.result(f"no plans in {config.path}")
    for p in plans:
        out.result(f"{p['name']}")
        out.result(f"  sources:      {', '.join(p['sources'])}")
        for d in p["destinations"]:
            own = p["retention_per_destination"].get(d["name"])
            extra = f"  (keeps: {_policy_text(own)})" if own else ""
            out.result(f"  destination:  {d['name']:<12} {d['location']}{extra}")
        out.result(f"  schedule:     {p['schedule'] or 'none (run by hand)'}")
        for stage, cmds in p["hooks"].items():
            out.result(f"  hooks {stage + ':':<7} {'; '.join(cmds)}")
        out.result(f"  retention:    {_policy_text(p['retention'])}")
    return 0


def cmd_plan_run(args: argparse.Namespace, out: Printer) -> int:
    from multibackup.plans.history import append_run
    from multibackup.plans.runner import elapsed, run_plan

    config = _config(args)
    config.plan(args.name)  # an unknown name fails here, before anything runs
    progress = Progress()
    with out.progress(progress, f"plan {args.name}"):
        record = run_plan(config, args.name, progress=progress,
                          on_step=lambda text: None if out.interactive else out.line(text))
    append_run(record)
    doc = record.to_json()
    out.emit(doc)
    for note in record.notes:
        out.warn(f"note: {note}")
    for err in record.errors:
        out.problem(f"error: {err}")
    for h in record.hooks:
        state = "ok" if h["error"] is None else h["error"]
        out.line(f"  hook {h['stage']}: {h['command']}: {state}")
    for src in record.sources:
        if src["ok"]:
            s = src["summary"]
            out.line(f"  source {src['name']}: snapshot {src['snapshot'][:8]} saved; "
                     f"{s.get('total_files', 0)} file(s), "
                     f"{human_bytes(s.get('total_bytes', 0))}")
        else:
            out.line(f"  source {src['name']}: FAILED ({src.get('error', '')})")
    if record.snapshot and not record.sources:
        s = record.summary
        out.line(f"plan {record.plan}: snapshot {record.snapshot[:8]} saved; "
                 f"{s.get('total_files', 0)} files, {human_bytes(s.get('total_bytes', 0))}, "
                 f"added {human_bytes(s.get('data_added', 0))} stored, "
                 f"in {elapsed(record):.1f} s")
    for d in record.destinations:
        state = "ok" if d["ok"] else "FAILED"
        out.line(f"  {state:<7}{d['name']:<14}{d['destination']}: {d['writes']} objects, "
                 f"{human_bytes(d['bytes_written'])}" + (f" ({d['error']})" if d["error"] else ""))
    for name, n in record.caught_up.items():
        out.line(f"  caught up {name}: {n} object(s) copied")
    for name, ids in record.forgotten.items():
        if ids:
            out.line(f"  forgot {len(ids)} snapshot(s) on {name}")
    if record.pruned:
        out.line(f"  pruned: {record.pruned['packs_deleted']} packs deleted, "
                 f"{record.pruned['packs_repacked']} repacked, "
                 f"{human_bytes(record.pruned['bytes_freed'])} freed")
    out.line(f"plan {record.plan}: {record.status}")
    return record.exit_code


def cmd_plan_status(args: argparse.Namespace, out: Printer) -> int:
    from multibackup.plans.history import load_history

    config = _config(args)
    plan = config.plan(args.name)
    runs = load_history(plan.name)
    last = runs[-1] if runs else None
    lagging: dict[str, Any] = {}
    if last and last.get("repository"):
        lagging = LagRecord(last["repository"]).lagging
    dests = []
    for d in config.destinations_of(plan):
        lag = lagging.get(d.describe())
        dests.append({"name": d.name, "location": d.describe(),
                      "state": "lagging" if lag else ("ok" if last else "never run"),
                      "lagging_since": lag.get("since") if lag else None,
                      "error": lag.get("error") if lag else None})
    doc = {"plan": plan.name, "schedule": plan.schedule.text if plan.schedule else None,
           "last_run": last, "runs": len(runs), "destinations": dests,
           "recent": [{k: r.get(k) for k in ("started", "status", "exit_code", "snapshot")}
                      for r in runs[-10:]]}
    out.emit(doc)
    if out.json:
        return 0
    out.result(f"plan {plan.name}  (schedule: {doc['schedule'] or 'none'})")
    if last is None:
        out.result("  never run")
    else:
        out.result(f"  last run:  {last['started'][:19]}  {last['status']}"
                   f"  snapshot {str(last.get('snapshot') or '-')[:8]}")
        for err in last.get("errors", [])[:5]:
            out.result(f"    error: {err}")
    for d in dests:
        extra = f" since {d['lagging_since'][:19]}: {d['error']}" if d["state"] == "lagging" else ""
        out.result(f"  {d['name']:<14}{d['state']:<10}{d['location']}{extra}")
    if len(runs) > 1:
        out.result("  recent runs: " + " ".join(
            {"ok": "+", "partial": "~"}.get(r.get("status"), "x") for r in runs[-20:]))
    return 0


def add_plan_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("plan", parents=parents, help="run and inspect the plans of the config file",
                        description="run and inspect the plans of the config file "
                                    "(--config, env MULTIBACKUP_CONFIG)")
    psub = sp.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    p = psub.add_parser("list", parents=parents, help="list the plans")
    p.set_defaults(func=cmd_plan_list)
    p = psub.add_parser("run", parents=parents, help="run a plan now")
    p.add_argument("name")
    p.set_defaults(func=cmd_plan_run)
    p = psub.add_parser("status", parents=parents, help="last run and state of each destination")
    p.add_argument("name")
    p.set_defaults(func=cmd_plan_status)
