"""Run by tests/bench/test_bench.py as a child process: prints its own peak memory as bench measures it."""

import json

from bench.measure import peak_rss_mib

print(json.dumps({"rss_mib": peak_rss_mib()}))
