"""gpu-agent zipapp entry point (built by .ci/build_zipapp.py; see ZIPAPP-INFO.json).

Kept as source, so any Python can run it and say what is wrong: the agent's modules in
the zip are bytecode for one Python version.
"""

import os
import sys

WANT = (3, 13)

if sys.version_info[:2] != WANT:
    want = "%d.%d" % WANT  # noqa: UP031  (this line must parse on any Python 3)
    have = "%d.%d" % sys.version_info[:2]  # noqa: UP031
    sys.stderr.write(
        "gpu-agent: this zipapp holds bytecode for Python "
        + want
        + ", but "
        + (sys.executable or "python3")
        + " is Python "
        + have
        + ". Run it with python"
        + want
        + " (the chart's agent.zipapp.image is python:"
        + want
        + "-slim), or use "
        "the agent image (helm value agent.source=image).\n"
    )
    sys.exit(2)

# Stock Python images ship the standard library without bytecode, and the pod's root
# filesystem is read-only: the chart points GPU_AGENT_PYCACHE at its /tmp emptyDir, so
# only the first exec in a pod compiles the standard-library modules the agent uses
# (~0.1 CPU-s); later execs load them from there.
_cache = os.environ.get("GPU_AGENT_PYCACHE")
if _cache:
    sys.pycache_prefix = _cache
    sys.dont_write_bytecode = False

from agent.__main__ import main  # noqa: E402  (after the cache is set up)

sys.exit(main())
