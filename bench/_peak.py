"""Run a module as ``python -m`` would and print its peak resident memory last: PEAK {"maxrss_mib": ...}."""

import atexit
import json
import resource
import runpy
import sys


def _report() -> None:
    print("PEAK " + json.dumps({"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["-m"] or len(sys.argv) < 3:
        raise SystemExit("usage: _peak.py -m MODULE [ARGS...]")
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    atexit.register(_report)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
