"""Command line: ``stare demo | train | eval | export | compare | calibrate | objectives | methods``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings


def _cmd_demo(args: argparse.Namespace) -> int:
    from .train.demo import run_demo
    from .train.logging import quiet_transformers

    quiet_transformers()
    run_demo(args.overrides, out_dir=args.out, config=args.config)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.config import load_config
    from .train.logging import quiet_transformers
    from .train.trainer import Trainer

    quiet_transformers()
    cfg = load_config(args.config, list(args.overrides) + (["trainer.overwrite=true"] if args.overwrite else []))
    trainer = Trainer(cfg)
    progress = _progress_printer(cfg.trainer.steps) if cfg.logging.progress else None
    trainer.train(progress=progress)
    print(f"done: {cfg.output_dir}")
    return 0


def _progress_printer(total: int):
    import time

    start = time.time()

    def show(step: int, m: dict) -> None:
        rate = (time.time() - start) / step
        parts = [f"step {step}/{total}", f"entropy {m.get('actor/entropy', float('nan')):.3f}",
                 f"acc {m.get('critic/acc/mean', float('nan')):.3f}", f"eta {rate * (total - step):.0f}s"]
        if "stare/gate_on" in m:
            parts.append(f"gate {'on' if m['stare/gate_on'] else 'off'}")
        val = [f"{k[4:]} {v:.3f}" for k, v in m.items() if k.startswith("val/") and "@" in k]
        print("  ".join(parts + val), flush=True)

    return show


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train.config import load_config
    from .train.logging import quiet_transformers
    from .train.trainer import Trainer

    quiet_transformers()
    overrides = list(args.overrides) + ([f"model.name_or_path={args.model}"] if args.model else [])
    if any(o.split("=", 1)[0].strip() == "model.name_or_path" for o in overrides):
        # a model given by path or hub id is evaluated as it is: no run checkpoint loaded into it and no
        # fresh LoRA around it, unless the overrides say otherwise (later overrides win)
        overrides = ["trainer.resume=false", "model.lora.enabled=false"] + overrides
    cfg = load_config(args.config, overrides)
    trainer = Trainer(cfg)
    result = trainer.evaluate()
    print(json.dumps(result, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .train.export import ExportError, export_run, push_to_hub
    from .train.logging import quiet_transformers

    quiet_transformers()
    try:
        res = export_run(args.run_dir, step=args.step, out=args.out, adapter=args.adapter)
        kind = "LoRA adapter" if res.adapter else ("model, LoRA merged" if res.merged else "model")
        print(f"exported step {res.step} ({kind}): {res.folder}")
        if args.push_to_hub:
            print(f"pushed to the hub: {push_to_hub(res.folder, args.push_to_hub)}")
    except ExportError as e:
        print(f"stare: export error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report.aggregate import aggregate
    from .report.html import write_report
    from .report.plots import aggregate_panels, plot_aggregate, plot_pass_at_k
    from .report.runs import plan_runs
    from .report.tables import markdown_table, summary_table, table_console
    from .train.config import load_config
    from .train.scheduler import BASE, run_grid

    console = table_console()
    # validate every combination before spending any compute ("base": the untrained model, evaluated only)
    cfg = load_config(args.config, list(args.overrides))
    for m in args.methods:
        if m != BASE:
            cfg = load_config(args.config, list(args.overrides) + [f"method={m}"])
    runs_dir = Path(args.out)
    out = Path(args.report_dir or args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(runs_dir, args.methods, args.seeds)
    failed = [] if args.no_run else run_grid(args.config, specs, args.overrides, workers=args.workers,
                                             total_steps=cfg.trainer.steps, console=console)
    baseline = args.baseline or next((m for m in args.methods if m != BASE), args.methods[0])
    result = aggregate(specs, baseline=baseline)
    (out / "summary.json").write_text(json.dumps(result, indent=1, default=str))
    names = ", ".join(args.methods) if len(args.methods) <= 3 else f"{len(args.methods)} methods"  # the legend names them
    png = plot_aggregate(result["curves"], out / "curves.png", title=f"{names}: mean of {len(args.seeds)} seeds, "
                         f"95% band, {result['smooth']}-step moving average", panels=aggregate_panels(result["curves"]))
    figures = {"mean over seeds with 95% bands": png}
    if result["pass_at_k"]:
        figures["pass@k at the last evaluation, mean over seeds with 95% bands"] = plot_pass_at_k(
            result["pass_at_k"], out / "pass_at_k.png", title=f"{names}: pass@k, {len(args.seeds)} seeds")
    command = "stare compare " + " ".join([args.config, *args.overrides, "--methods", *args.methods, "--seeds",
                                           *map(str, args.seeds), "--out", args.out])
    report = write_report(result, figures, out / "report.html",
                          title=f"stare compare: {len(args.methods)} methods x {len(args.seeds)} seeds", command=command)
    (out / "summary.md").write_text(f"`{command}`\n\n{markdown_table(result)}\n")
    console.print(summary_table(result))
    console.print(f"report: {report}; figures: {png}; data: {out / 'summary.json'}, {out / 'summary.md'}")
    if failed:
        console.print(f"[red]failed runs: {[f'{s.method}/seed_{s.seed}' for s in failed]} (rerun to retry)")
        return 1
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .report.tables import table_console
    from .train.calibrate import calibrate

    console = table_console()
    result = calibrate(args.config, args.methods, args.out, args.overrides, seeds=args.seeds, workers=args.workers,
                       console=console)
    for m, cal in result["methods"].items():
        h = [r["tail_entropy_over_target"] for r in cal["per_seed"].values()]
        console.print(f"{m}: {cal['param']} = {cal['value']:.4g}  reached: {cal['reached']}  tail entropy / target: "
                      + ", ".join(f"{x:.2f}" for x in h))
    console.print(f"fixed strengths: {args.out}/calibrated.yaml; details: {args.out}/calibration.json")
    return 0


def _cmd_objectives(args: argparse.Namespace) -> int:
    from .objectives import get_objective, list_objectives

    for name in list_objectives():
        obj = get_objective(name)
        print(f"{name}: {obj.summary}")
        line = f"    acts at: {', '.join(obj.acts_at)}"
        if obj.needs:
            line += f"; needs: {', '.join(sorted(obj.needs))}"
        if obj.controller is not None:
            line += f"; controller: {obj.controller.__name__}"
        if obj.step_hooks:
            line += f"; trainer hooks: {', '.join(obj.step_hooks)} (not in the verl / TRL plug-ins)"
        print(line)
        defaults = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(obj.params))
        print(f"    params: {defaults}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .train.methods import METHODS

    for name, preset in METHODS.items():
        print(f"{name}: {json.dumps(preset)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stare", description="Entropy-stable RLVR: STARE and its peers.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="GRPO-ds vs STARE-O1 on the CPU testbed (minutes)")
    demo.add_argument("overrides", nargs="*", help="key=value config overrides")
    demo.add_argument("--out", default=None, help="run folder (default runs/demo-<time>)")
    demo.add_argument("--config", default=None, help="another config (default: the packaged exploration testbed)")
    demo.set_defaults(func=_cmd_demo)
    train = sub.add_parser("train", help="train from a YAML config")
    train.add_argument("config", help="YAML file")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. method=stare_o1 optim.lr=1e-3")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in output_dir")
    train.set_defaults(func=_cmd_train)
    ev = sub.add_parser("eval", help="held-out avg@n and pass@k of a config's model (or its run's last checkpoint)")
    ev.add_argument("config")
    ev.add_argument("overrides", nargs="*")
    ev.add_argument("--model", default=None, help="evaluate this model instead (folder, e.g. from stare export, or hub "
                    "id); same as model.name_or_path=..., which also turns off resume and LoRA")
    ev.set_defaults(func=_cmd_eval)
    ex = sub.add_parser("export", help="a run's checkpoint as a Hugging Face model folder (LoRA merged by default)")
    ex.add_argument("run_dir", help="the run's output_dir (holds config.yaml and checkpoints/)")
    ex.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    ex.add_argument("--out", default=None, help="destination (default RUN_DIR/export/global_step_N)")
    ex.add_argument("--adapter", action="store_true", help="save LoRA as a PEFT adapter instead of merging it")
    ex.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload to this hub repository")
    ex.set_defaults(func=_cmd_export)
    cmp = sub.add_parser("compare", help="run methods x seeds (resumable, parallel) and aggregate them")
    cmp.add_argument("config", help="YAML file shared by all runs")
    cmp.add_argument("overrides", nargs="*", help="key=value overrides for all runs")
    cmp.add_argument("--methods", nargs="+", required=True, help="method presets (stare methods); 'base': the "
                     "untrained model, evaluated once per seed (cached)")
    cmp.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    cmp.add_argument("--out", default="runs/compare", help="output folder (rerun to resume)")
    cmp.add_argument("--workers", type=int, default=None, help="runs at once (default: number of cores)")
    cmp.add_argument("--baseline", default=None, help="method the tests compare against (default: the first)")
    cmp.add_argument("--no-run", action="store_true", help="only aggregate the runs that exist (e.g. while a grid runs)")
    cmp.add_argument("--report-dir", default=None, help="where the report, figures and tables go (default: --out)")
    cmp.set_defaults(func=_cmd_compare)
    cal = sub.add_parser("calibrate", help="the fixed strength of each method's knob that holds STARE's entropy band")
    cal.add_argument("config", help="YAML file of the comparison")
    cal.add_argument("overrides", nargs="*", help="key=value overrides for all runs")
    cal.add_argument("--methods", nargs="+", required=True, help="methods with a knob (stare.train.knobs.KNOBS)")
    cal.add_argument("--out", default="runs/calibrate", help="folder of the <method>_band runs (a stare compare folder "
                     "is reused), calibration.json and calibrated.yaml")
    cal.add_argument("--seeds", nargs="+", type=int, default=[0])
    cal.add_argument("--workers", type=int, default=None, help="runs at once (default: number of cores)")
    cal.set_defaults(func=_cmd_calibrate)
    sub.add_parser("objectives", help="list the registered objectives with their defaults").set_defaults(
        func=_cmd_objectives)
    sub.add_parser("methods", help="list the method presets").set_defaults(func=_cmd_methods)
    args = parser.parse_args(argv)
    from .train.errors_cli import run_reporting_errors

    return run_reporting_errors(args.func, args)


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(main())
