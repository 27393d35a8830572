/**
 * `node replay.mjs FILE.jsonl [--order file|canonical] [--drop-tombstones] [--with-meta]`:
 * the node twin of `python -m durasync.crdt replay`. Folds a JSONL journal with the JS replica
 * and prints its canonical JSON; the same input gives the same bytes as the Python command.
 *
 * Input: one CRDTMessage per line (long or compact names, or a wire wrapper
 * `{"mtype":"crdt"|"broadcast","msg":{...}}`); blank lines and lines starting with `#` or `//`
 * are skipped. Exit status 0, or 2 on unreadable or malformed input (the message names the
 * line and the field), or 2 on bad arguments.
 */

import { readFileSync } from "node:fs";

import { CRDTValidationError, decodeMessageJson, type Message } from "./crdt/messages.js";
import { Replica } from "./crdt/replica.js";

const USAGE = "usage: replay.mjs FILE.jsonl [--order file|canonical] [--drop-tombstones] [--with-meta]";
// Python's str.splitlines boundaries
const LINES = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;

/** Parse one message per line; throws `CRDTValidationError` whose field starts with `line N`. */
export function readJsonl(text: string): Message[] {
  const out: Message[] = [];
  const lines = text.split(LINES);
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  lines.forEach((line, i) => {
    const s = line.trim();
    if (!s || s.startsWith("#") || s.startsWith("//")) return;
    try {
      out.push(decodeMessageJson(s));
    } catch (exc) {
      if (exc instanceof CRDTValidationError) throw new CRDTValidationError(`line ${i + 1}: ${exc.field}`, exc.detail);
      throw exc;
    }
  });
  return out;
}

/** Fold `messages` in file order (as a server's sequence) or canonical order. */
export function replay(messages: Message[], order: "file" | "canonical"): Replica {
  const r = new Replica("replay");
  if (order === "file") r.receiveMany(messages, messages.map((_, i) => i), { validate: false });
  else r.receiveMany(messages, null, { validate: false });
  return r;
}

function main(argv: string[]): number {
  let file: string | null = null;
  let order: "file" | "canonical" = "file";
  let live = false;
  let withMeta = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--order") {
      const v = argv[++i];
      if (v !== "file" && v !== "canonical") {
        process.stderr.write(`${USAGE}\nerror: --order must be file or canonical\n`);
        return 2;
      }
      order = v;
    } else if (a.startsWith("--order=")) {
      const v = a.slice(8);
      if (v !== "file" && v !== "canonical") {
        process.stderr.write(`${USAGE}\nerror: --order must be file or canonical\n`);
        return 2;
      }
      order = v;
    } else if (a === "--drop-tombstones") {
      live = true;
    } else if (a === "--with-meta") {
      withMeta = true;
    } else if (a === "-h" || a === "--help") {
      process.stdout.write(
        `${USAGE}\n\nFold a JSONL journal with the durasync JS replica and print the graph as canonical JSON.\n` +
          "  --order file|canonical  file order like a server's sequence (default), or sort by (lamportTime, client)\n" +
          "  --drop-tombstones       live view: leave deleted nodes out (and out of every children list)\n" +
          '  --with-meta             add each node\'s LWW stamps as "lww"\n',
      );
      return 0;
    } else if (file === null && (a === "-" || !a.startsWith("-"))) {
      file = a;
    } else {
      process.stderr.write(`${USAGE}\nerror: unexpected argument ${a}\n`);
      return 2;
    }
  }
  if (file === null) {
    process.stderr.write(`${USAGE}\nerror: FILE.jsonl is required\n`);
    return 2;
  }
  let text: string;
  try {
    text = readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (exc) {
    process.stderr.write(`error: cannot read ${file}: ${(exc as Error).message}\n`);
    return 2;
  }
  let msgs: Message[];
  try {
    msgs = readJsonl(text);
  } catch (exc) {
    if (exc instanceof CRDTValidationError) {
      process.stderr.write(`error: ${file}: ${exc.message}\n`);
      return 2;
    }
    throw exc;
  }
  process.stdout.write(replay(msgs, order).dump({ live, withMeta }) + "\n");
  return 0;
}

process.exitCode = main(process.argv.slice(2));
