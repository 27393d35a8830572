/**
 * Canonical JSON of a scene graph (docs/crdt.md "Canonical JSON"), byte-identical to
 * `durasync.crdt.canonical_json`: keys sorted by code point, no spaces, no ASCII escaping,
 * numbers as `String(Number(x.toPrecision(12)))` with `-0` -> `0` and NaN/±inf -> `null`.
 *
 * Integers: the rule goes by value, as JS has one number type: an integral number within
 * ±(2^53−1) prints with all its digits (Python does the same for an `int` and for an integral
 * `float`, e.g. `1234567890123.0`), anything else is rounded to 12 significant digits. Messages
 * carry no larger integers, and Python turns integer arithmetic beyond that range into floats,
 * as JS computes.
 */

import { TEXT, textKey, type SceneGraph } from "./graph.js";
import { cmpStr } from "./strings.js";

/** Canonical text of a number. */
export function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return "null";
  if (x === 0) return "0";
  if (Number.isInteger(x) && Math.abs(x) <= Number.MAX_SAFE_INTEGER) return String(x);
  const r = Number(x.toPrecision(12));
  return r === 0 ? "0" : String(r);
}

const enc = JSON.stringify as (s: string) => string;

function sortedKeys(keys: Iterable<string>): string[] {
  return Array.from(keys).sort(cmpStr);
}

function encValue(v: unknown, out: string[], g: SceneGraph, key: string, path: string): void {
  switch (typeof v) {
    case "string":
      out.push(enc(v));
      return;
    case "boolean":
      out.push(v ? "true" : "false");
      return;
    case "number":
      out.push(formatNumber(v));
      return;
    case "symbol":
      if (v === TEXT) {
        const d = g.texts.get(textKey(key, path));
        out.push(enc(d !== undefined ? d.text() : ""));
        return;
      }
      break;
    case "object":
      if (v === null) {
        out.push("null");
        return;
      }
      if (Array.isArray(v)) {
        out.push("[");
        for (let i = 0; i < v.length; i++) {
          if (i) out.push(",");
          encValue(v[i], out, g, key, path);
        }
        out.push("]");
        return;
      }
      out.push("{");
      {
        const o = v as Record<string, unknown>;
        let first = true;
        for (const k of sortedKeys(Object.keys(o))) {
          if (!first) out.push(",");
          first = false;
          out.push(enc(k), ":");
          encValue(o[k], out, g, key, path);
        }
      }
      out.push("}");
      return;
    default:
      break;
  }
  out.push(enc(String(v)));
}

/**
 * The canonical JSON text of `g`. `live` leaves tombstoned nodes out (and out of every
 * `children` list); `withMeta` adds each node's `"lww": {path: {"client", "lt"}}`.
 */
export function canonicalJson(g: SceneGraph, opts: { live?: boolean; withMeta?: boolean } = {}): string {
  const live = opts.live ?? false;
  const withMeta = opts.withMeta ?? false;
  const nodes = g.nodes;
  const out: string[] = ['{"nodes":{'];
  let first = true;
  for (const key of sortedKeys(nodes.keys())) {
    const n = nodes.get(key)!;
    const deleted = n.deletedAt !== null;
    if (live && deleted) continue;
    if (!first) out.push(",");
    first = false;
    out.push(enc(key), ':{"children":[');
    let ch = n.children;
    if (live) {
      ch = ch.filter((c) => {
        const m = nodes.get(c);
        return !(m !== undefined && m.deletedAt !== null);
      });
    }
    out.push(ch.map(enc).join(","), '],"deleted":', deleted ? "true" : "false");
    if (withMeta) {
      out.push(',"lww":{');
      out.push(
        sortedKeys(n.lww.keys())
          .map((p) => {
            const st = n.lww.get(p)!;
            return `${enc(p)}:{"client":${enc(st[1])},"lt":${String(st[0])}}`;
          })
          .join(","),
      );
      out.push("}");
    }
    out.push(',"name":', enc(n.name), ',"props":{');
    let pfirst = true;
    for (const p of sortedKeys(n.props.keys())) {
      if (!pfirst) out.push(",");
      pfirst = false;
      out.push(enc(p), ":");
      encValue(n.props.get(p), out, g, key, p);
    }
    out.push('},"tag":', enc(n.tag), "}");
  }
  out.push('},"rootKey":', enc(g.rootKey), "}");
  return out.join("");
}
