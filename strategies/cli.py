"""Command-line entry points: ``fed-opc simulate|compare|summary|report ...``; ``scripts/*.py`` call the same functions.

Bad input (an invalid scenario, a missing or damaged dataset, an unusable ``--out``) prints one line to stderr and
exits with code 2 before anything is written. An engine failure exits with 1; Ctrl-C leaves a resumable checkpoint
and exits with 130, SIGTERM likewise with 143.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path


def _quiet_environment() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def simulate_parser(prog: str = "simulate.py") -> argparse.ArgumentParser:
    """The arguments of ``simulate``: the scenario file, ``--out`` and the options that override or steer the run."""
    p = argparse.ArgumentParser(prog=prog, description="Run a fed-opc scenario and write its run directory.")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--out", help="run directory (default: output.dir of the scenario, else runs/<name>)")
    p.add_argument("--seeds", type=int, nargs="+", help="run once per seed (one seed_<s>/ folder each) and summarise")
    p.add_argument("--methods", nargs="+", help="override unlearning.methods")
    p.add_argument("--resume", action="store_true", help="continue a killed or interrupted run from its checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds (default: refuse it)")
    p.add_argument("--no-cache", action="store_true", help="do not read or fill the pretraining cache")
    p.add_argument("--backend", choices=["ray", "inprocess"], help="override federation.backend")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="write results.json and log.txt only (python -m strategies.reporting OUT writes the report later)",
    )
    return p


def _fail(msg: str, code: int) -> int:
    print(f"error: {msg}" if not msg.startswith(("error", "fed-opc")) else msg, file=sys.stderr)
    return code


def simulate_main(argv: Sequence[str] | None = None, prog: str = "simulate.py") -> int:
    """Parse arguments, run the scenario, return the exit code."""
    args = simulate_parser(prog).parse_args(argv)
    _quiet_environment()
    import dataclasses

    from fed_opc.checkpoint import CheckpointError
    from fed_opc.config import ConfigError, load_scenario, parse_scenario, scenario_to_dict
    from fed_opc.data import DataError, PartitionError
    from fed_opc.flower import EngineError
    from strategies.run import RunDirError, default_out_dir, simulate

    try:
        sc = load_scenario(args.scenario)
        if args.backend:
            sc = dataclasses.replace(sc, federation=dataclasses.replace(sc.federation, backend=args.backend))
        if args.methods:
            raw = scenario_to_dict(sc)
            raw["unlearning"]["methods"] = list(args.methods)
            sc = parse_scenario(raw, path=args.scenario)
        if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
            raise ConfigError("--seeds", f"a seed is listed twice: {args.seeds}", args.scenario)
        if args.seeds is not None and any(s < 0 for s in args.seeds):
            raise ConfigError("--seeds", f"expected ints >= 0, got {args.seeds}", args.scenario)
    except ConfigError as e:
        return _fail(str(e), 2)
    if args.resume and args.overwrite:
        return _fail(f"{args.scenario}: --resume and --overwrite exclude each other", 2)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        kw = {
            "overwrite": args.overwrite,
            "use_cache": not args.no_cache,
            "progress": not args.no_progress,
            "report": not args.no_report,
        }
        if args.seeds is None:
            result = simulate(sc, args.out, resume=args.resume, **kw)
        else:
            from strategies.reporting.summary import write_summary

            out = Path(args.out) if args.out else default_out_dir(sc)
            runs = []
            for seed in args.seeds:
                print(f"seed {seed}", file=sys.stderr)
                folder = out / f"seed_{seed}"
                # --resume continues the seeds that started and runs the ones that did not
                resume = args.resume and (folder / "scenario.yaml").is_file()
                runs.append(simulate(dataclasses.replace(sc, seed=seed), folder, resume=resume, **kw))
            write_summary(out, [r.results for r in runs])
            result = runs[-1]
            result.out_dir = out
    except (DataError, PartitionError, RunDirError) as e:
        return _fail(f"{args.scenario}: {e}", 2)
    except CheckpointError as e:
        return _fail(f"{e}", 2)
    except EngineError as e:
        return _fail(f"{args.scenario}: {e}", 1)
    except Terminated:
        return _fail("terminated; continue with --resume", 143)
    except SystemExit as e:  # under Ray, ray.init's own SIGTERM handler replaces ours with sys.exit(SIGTERM)
        if e.code == signal.SIGTERM:
            return _fail("terminated; continue with --resume", 143)
        raise
    except KeyboardInterrupt:
        return _fail("interrupted; continue with --resume", 130)
    except Exception as e:  # anything else is a failure of the run itself: one line here, the traceback in the log
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return _fail(f"{args.scenario}: run failed: {e.__class__.__name__}: {first} (traceback in log.txt)", 1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"run directory: {result.out_dir}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same orderly stop as Ctrl-C: checkpoints stay, the run can be resumed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _compare(argv: Sequence[str], prog: str) -> int:
    from strategies.reporting.compare import main as compare_main

    return compare_main(argv, prog=prog)


def _summary(argv: Sequence[str], prog: str) -> int:
    from strategies.reporting.summary import main as summary_main

    return summary_main(argv, prog=prog)


def _report(argv: Sequence[str], prog: str) -> int:
    from strategies.reporting.report import main as report_main

    return report_main(argv, prog=prog)


# command -> (entry point, what it does); the reporting commands import neither torch nor flwr
COMMANDS = {
    "simulate": (simulate_main, "run a scenario and write its run directory"),
    "compare": (_compare, "compare the metrics of run directories side by side"),
    "summary": (_summary, "(re)build the mean +- std summary of a multi-seed directory"),
    "report": (_report, "(re)build metrics.csv, the plots, report.md and report.html of a run directory"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``fed-opc <command> ...``: one of ``COMMANDS``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        asked = argv[:1] in (["-h"], ["--help"])  # the usage as an answer (stdout, 0) rather than an error (stderr, 2)
        lines = [f"usage: fed-opc {{{','.join(COMMANDS)}}} ..."]
        lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
        print("\n".join(lines), file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    entry, _ = COMMANDS[argv[0]]
    return entry(argv[1:], prog=f"fed-opc {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
