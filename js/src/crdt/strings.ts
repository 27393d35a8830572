/**
 * String helpers that follow Python's semantics, so the replica agrees with `durasync.crdt`
 * byte for byte: lengths and positions count Unicode code points (not UTF-16 units), and
 * strings order by code point (JS `<` orders by UTF-16 unit, which differs for characters
 * above U+FFFF against U+E000..U+FFFF).
 */

const SURROGATE = /[\uD800-\uDFFF]/;

/** Whether `s` has no surrogate pairs (then code units and code points coincide). */
export function isBmp(s: string): boolean {
  return !SURROGATE.test(s);
}

/** Number of code points of `s` (Python `len`). */
export function cpLen(s: string): number {
  if (!SURROGATE.test(s)) return s.length;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xdc00 || c > 0xdfff) n++;
  }
  return n;
}

/** `s[a:b]` in code points (`n` = `cpLen(s)`, given to skip the scan). */
export function cpSlice(s: string, a: number, b: number, n: number): string {
  if (n === s.length) return s.slice(a, b);
  return Array.from(s).slice(a, b).join("");
}

/** Code point order of two strings: negative, 0 or positive (Python `<`/`==`/`>`). */
export function cmpStr(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // surrogates (astral code points) sort above U+E000..U+FFFF
      if (x >= 0xd800 && y >= 0xd800) {
        x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
        y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      }
      return x - y;
    }
  }
  return a.length - b.length;
}

/** Python `a < b` on strings. */
export function strLt(a: string, b: string): boolean {
  return cmpStr(a, b) < 0;
}

/** Python `str.rpartition(":")`: `[head, sep, tail]`. */
export function rpartition(s: string, sep: string): [string, string, string] {
  const i = s.lastIndexOf(sep);
  if (i < 0) return ["", "", s];
  return [s.slice(0, i), sep, s.slice(i + sep.length)];
}

const DIGITS = /^[0-9]+$/;

/** Whether `s` is a non-empty run of ASCII digits (Python `isdigit() and isascii()`). */
export function isDigits(s: string): boolean {
  return DIGITS.test(s);
}
