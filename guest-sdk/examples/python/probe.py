"""A PLB probe in Python: an HTTP check of the node's own endpoint.

Built into a WebAssembly component of the `plb:probe/probe` world by
`scripts/build-python-probe.sh OUT.wasm` (componentize-py). The host does the
request and the timing; this module only judges the answer.

Config (all optional):
  path            the path to request (default /health)
  expect-status   accepted statuses: codes and ranges, e.g. "200,204" or "200-399" (default)
  body-contains   text the body must contain
  timeout-ms      request timeout in ms (default 2000)

Metrics: http-connect-ms, http-first-byte-ms, http-total-ms, http-status,
python-judge-ms (the time this module spent judging, to show WASI clocks work).
"""

import time

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types


def parse_statuses(spec):
    """Parse "200,204-206" into a list of inclusive (lo, hi) ranges; ValueError if bad."""
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        lo_code = int(lo)
        hi_code = int(hi) if sep else lo_code
        if not (100 <= lo_code <= hi_code <= 599):
            raise ValueError(f"bad status range {part!r}")
        ranges.append((lo_code, hi_code))
    return ranges


def config_dict(ctx):
    """The probe's config as a dict (the last entry for a key wins)."""
    return {key: value for key, value in ctx.config}


def unhealthy(message):
    """The node failed the check."""
    return Err(types.Failure_Unhealthy(message))


def broken(message):
    """The probe could not do its job."""
    return Err(types.Failure_Broken(message))


class WitWorld(wit_world.WitWorld):
    """The exported `run` of the probe world."""

    def run(self, ctx):
        config = config_dict(ctx)
        path = config.get("path", "/health")
        try:
            statuses = parse_statuses(config.get("expect-status", "200-399"))
        except ValueError as e:
            raise broken(f"config `expect-status`: {e}")
        try:
            timeout_ms = int(config.get("timeout-ms", "2000"))
        except ValueError as e:
            raise broken(f"config `timeout-ms`: {e}")

        try:
            response = host.http("GET", path, [], b"", timeout_ms)
        except Err as e:
            # No response at all (refused, timed out) counts against the node.
            raise unhealthy(f"GET {path}: {e.value}")

        start = time.monotonic()
        if not any(lo <= response.status <= hi for lo, hi in statuses):
            raise unhealthy(f"{path} answered {response.status}")
        needle = config.get("body-contains")
        if needle is not None and needle not in response.body.decode("utf-8", "replace"):
            raise unhealthy(f"{path} answered without {needle!r} in its body")
        judge_ms = (time.monotonic() - start) * 1000.0

        host.log(host.Level.INFO, f"{path} answered {response.status} in {response.total_ms:.2f} ms")
        return types.Report(
            metrics=[
                types.Metric("http-connect-ms", response.connect_ms),
                types.Metric("http-first-byte-ms", response.first_byte_ms),
                types.Metric("http-total-ms", response.total_ms),
                types.Metric("http-status", float(response.status)),
                types.Metric("python-judge-ms", judge_ms),
            ]
        )
