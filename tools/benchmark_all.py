"""Train, score and time every model of a benchmark profile; write comparison tables and figures.

    python tools/benchmark_all.py                                   # profile smoke: synthetic data, tiny models
    python tools/benchmark_all.py --profile drive                   # DRIVE from $JMEDSEG_DATA or ../shared/data
    python tools/benchmark_all.py --profile kvasir --data data/Kvasir-SEG --models unet,unetpp
    python tools/benchmark_all.py --profile my_profile.yaml --dry-run

Each model runs in its own process; its result is saved as work_dirs/benchmark/<profile>/<model>.json,
so an interrupted run resumes where it stopped (finished models are skipped unless --force).
Tables and figures go to results/<profile>/. Profiles: configs/benchmark/*.yaml (keys documented in
jmedseg/benchmark.py).
"""
import shlex

from jmedseg.cli import new_parser, run_tool


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke",
                        help="a profile name from configs/benchmark/ or a profile YAML file")
    parser.add_argument("--models", help="comma-separated models of the profile to run (default: all of them)")
    parser.add_argument("--data", help="dataset folder (default: the profile's dataset under $JMEDSEG_DATA "
                                       "or ../shared/data)")
    parser.add_argument("--work-dir", default="work_dirs/benchmark", help="parent of the run folder")
    parser.add_argument("--out-dir", default="results", help="parent of the results folder")
    parser.add_argument("--force", action="store_true", help="rerun models that already have a result")
    parser.add_argument("--retry-failed", action="store_true", help="rerun models whose result is not 'ok'")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (models, args, steps, state) only")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from pathlib import Path

    from jmedseg.benchmark import load_profile, plan_benchmark, resolve_data_root, run_benchmark, select_models

    profile = load_profile(args.profile)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    if args.dry_run:
        data_root = resolve_data_root(profile, args.data)
        plan = plan_benchmark(profile, data_root, Path(args.work_dir) / profile.name, models,
                              args.force, args.retry_failed)
        print(f"profile {profile.name} ({profile.path}); data: {data_root or 'from the config (synthetic if null)'}")
        by_name = {p.name: p for p in plan}
        chosen = [by_name[name] for name in select_models(profile, models)]
        width = max(len(p.name) for p in chosen)
        for p in chosen:
            print(f"{p.name:<{width}}  {'run ' if p.run else 'skip'}  {p.state:<10} "
                  f"steps {p.config.train.iterations:<6} args {dict(p.config.model.args)}")
        return 0
    command = shlex.join(["python", "tools/benchmark_all.py", *argv])
    outcome = run_benchmark(profile, data=args.data, models=models, work_dir=args.work_dir, out_dir=args.out_dir,
                            force=args.force, retry_failed=args.retry_failed, command=command)
    print(f"results: {outcome['out_dir'] / 'README.md'}, {outcome['out_dir'] / 'results.csv'}")
    problems = [name for name, r in outcome["records"].items() if r["status"] != "ok"]
    if problems:
        statuses = ", ".join(f"{name} ({outcome['records'][name]['status']})" for name in problems)
        print(f"not ok: {statuses}")
    return 0


if __name__ == "__main__":
    run_tool(main)
