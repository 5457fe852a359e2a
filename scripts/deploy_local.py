"""Run a scenario on Flower's deployment runtime on this machine: ``python scripts/deploy_local.py N SCENARIO``.

Starts a SuperLink and N SuperNodes on 127.0.0.1 (insecure; SuperNode i gets ``--node-config "partition-id=i
num-partitions=N"``), runs the scenario with ``flwr run``, waits for it, reports the run directory and stops every
process it started, also on failure, Ctrl-C or SIGTERM. Exit codes: 0 the run completed, 1 it failed, 2 bad input,
130 interrupted. See docs/deployment.md.
"""

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def parser() -> argparse.ArgumentParser:
    """The command line: the number of SuperNodes, the scenario file and the options of the run."""
    p = argparse.ArgumentParser(prog="deploy_local.py", description=__doc__.split("\n\n")[0])
    p.add_argument("nodes", type=int, help="number of SuperNodes (must equal the scenario's data.num_clients)")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--out", help="run directory (default: output.dir of the scenario, else runs/<name>)")
    p.add_argument("--workdir", help="folder for Flower's home, the SuperLink state and the logs (default: a temp one)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run (default 3600)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace a run of the same scenario in --out")
    p.add_argument("--no-cache", action="store_true", help="do not read or fill the pretraining cache")
    return p


def main(argv=None) -> int:
    """Deploy, run and stop as the module docstring says; return the exit code (0, 1, 2 or 130)."""
    args = parser().parse_args(argv)
    from fed_opc.config import ConfigError, load_scenario
    from strategies.deploy import DeploymentError, LocalDeployment
    from strategies.run import default_out_dir

    try:
        sc = load_scenario(args.scenario)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.nodes != sc.data.num_clients:
        print(f"error: {args.scenario}: data.num_clients is {sc.data.num_clients}, not {args.nodes}", file=sys.stderr)
        return 2
    out = (Path(args.out) if args.out else default_out_dir(sc)).resolve()
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="fed_opc_deploy_"))
    run_config = {
        "scenario": str(Path(args.scenario).resolve()),
        "out": str(out),
        "resume": args.resume,
        "overwrite": args.overwrite,
        "use-cache": not args.no_cache,
    }

    def on_term(signum, frame):  # SIGTERM ends the deployment the same way as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.perf_counter()
    dep = LocalDeployment(args.nodes, workdir)
    try:
        with dep:
            print(f"SuperLink on 127.0.0.1:{dep.port}, {args.nodes} SuperNodes; logs in {workdir}", file=sys.stderr)
            run_id, status = dep.run(REPO, run_config, timeout=args.timeout)
    except KeyboardInterrupt:
        print(f"interrupted; every process stopped; continue with --resume --out {out}", file=sys.stderr)
        return 130
    except DeploymentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    if status != "finished:completed" or not (out / "results.json").is_file():
        print(f"error: run {run_id} ended {status}; logs: {workdir / 'run.log'}, {out / 'log.txt'}", file=sys.stderr)
        return 1
    print(f"run {run_id} {status} in {wall:.1f} s (processes stopped)", file=sys.stderr)
    print(f"run directory: {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    sys.exit(main())
