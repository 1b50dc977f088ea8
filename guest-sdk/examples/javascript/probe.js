// A PLB probe in JavaScript: an HTTP check of the node's own endpoint.
//
// Built into a WebAssembly component of the `plb:probe/probe` world by
// `scripts/build-js-probe.sh OUT.wasm` (componentize-js from npm). The host does the
// request and the timing; this module only judges the answer.
//
// Config (all optional):
//   path            the path to request (default /health)
//   expect-status   accepted statuses: codes and ranges, e.g. "200,204" or "200-399" (default)
//   body-contains   text the body must contain
//   timeout-ms      request timeout in ms (default 2000)
//
// Metrics: http-connect-ms, http-first-byte-ms, http-total-ms, http-status, http-body-bytes.
import { http, log } from "plb:probe/host@0.1.0";

/** Parses "200,204-206" into [[lo, hi], ...]; throws on a bad spec. */
export function parseStatuses(spec) {
  return spec.split(",").map((part) => {
    const [lo, hi] = part.trim().split("-");
    const a = Number(lo);
    const b = hi === undefined ? a : Number(hi);
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 100 || b > 599 || a > b) {
      throw new Error(`bad status range "${part}"`);
    }
    return [a, b];
  });
}

// A failure is the `failure` variant: `unhealthy` counts against the node, `broken`
// against the probe. Throwing it makes the run return `err(failure)`.
const unhealthy = (message) => ({ tag: "unhealthy", val: message });
const broken = (message) => ({ tag: "broken", val: message });

export function run(ctx) {
  const config = Object.fromEntries(ctx.config);
  const path = config["path"] ?? "/health";
  const timeoutMs = Number(config["timeout-ms"] ?? "2000");
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 60000) {
    throw broken(`timeout-ms must be 1..=60000, not "${config["timeout-ms"]}"`);
  }
  let statuses;
  try {
    statuses = parseStatuses(config["expect-status"] ?? "200-399");
  } catch (e) {
    throw broken(`expect-status: ${e.message}`);
  }
  let resp;
  try {
    resp = http("GET", path, [], new Uint8Array(0), Math.min(timeoutMs, ctx.deadlineMs));
  } catch (e) {
    // The host's error string (refused, timed out, ...): the node failed the check.
    throw unhealthy(`GET ${path}: ${e.payload ?? e}`);
  }
  if (!statuses.some(([lo, hi]) => resp.status >= lo && resp.status <= hi)) {
    throw unhealthy(`GET ${path} answered ${resp.status}`);
  }
  const want = config["body-contains"];
  if (want !== undefined && !new TextDecoder().decode(resp.body).includes(want)) {
    throw unhealthy(`GET ${path}: the body does not contain "${want}"`);
  }
  log("debug", `GET ${path}: ${resp.status} in ${resp.totalMs.toFixed(2)} ms`);
  return {
    metrics: [
      { name: "http-connect-ms", value: resp.connectMs },
      { name: "http-first-byte-ms", value: resp.firstByteMs },
      { name: "http-total-ms", value: resp.totalMs },
      { name: "http-status", value: resp.status },
      { name: "http-body-bytes", value: resp.body.length },
    ],
  };
}
