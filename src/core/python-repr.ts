/**
 * Renders values the way upstream bty's (Python) messages embed them: `repr()` for quoted values,
 * `str()` for coerced fields, and Python type names. Operators and scripts that grep upstream's
 * messages keep working, and a catalog field coerced with `str()` upstream gets the same string
 * here (an integer `name = 5` is `"5"`, a float `1.0` is `"1.0"`).
 *
 * TOML integers must arrive as `bigint` (smol-toml's `integersAsBigInt: true`) so they can be
 * told apart from floats, exactly as Python's tomllib does.
 */
import { TomlDate } from 'smol-toml';

const SINGLE = "'";
const DOUBLE = '"';

/** `repr(s)` for a Python str: single quotes unless the text holds `'` and no `"`. */
export function reprString(text: string): string {
  const quote = text.includes(SINGLE) && !text.includes(DOUBLE) ? DOUBLE : SINGLE;
  let body = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '\\') body += '\\\\';
    else if (ch === quote) body += '\\' + ch;
    else if (ch === '\n') body += '\\n';
    else if (ch === '\r') body += '\\r';
    else if (ch === '\t') body += '\\t';
    else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0)) body += '\\x' + hex(cp, 2);
    else body += ch;
  }
  return quote + body + quote;
}

/** `repr(x)` for a value that came out of a TOML document (or null for Python's None). */
export function pyRepr(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (typeof value === 'string') return reprString(value);
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return reprFloat(value);
  if (value instanceof TomlDate) return reprString(value.toISOString());
  if (Array.isArray(value)) return '[' + value.map(pyRepr).join(', ') + ']';
  if (typeof value === 'object') {
    const items = Object.entries(value).map(([k, v]) => `${reprString(k)}: ${pyRepr(v)}`);
    return '{' + items.join(', ') + '}';
  }
  return reprString(typeof value === 'symbol' ? value.toString() : 'function');
}

/** `str(x)`: strings as they are, everything else as its repr. */
export function pyStr(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value instanceof TomlDate) return value.toISOString();
  return pyRepr(value);
}

/** `type(x).__name__` for TOML values. */
export function pyTypeName(value: unknown): string {
  if (value === null || value === undefined) return 'NoneType';
  if (typeof value === 'string') return 'str';
  if (typeof value === 'boolean') return 'bool';
  if (typeof value === 'bigint') return 'int';
  if (typeof value === 'number') return 'float';
  if (value instanceof TomlDate) {
    if (value.isDate()) return 'date';
    if (value.isTime()) return 'time';
    return 'datetime';
  }
  if (Array.isArray(value)) return 'list';
  return 'dict';
}

/** Python's float repr: shortest round-trip digits, exponent form outside 1e-4 ≤ |x| < 1e16. */
function reprFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa = '0', expText = '0'] = x.toExponential().split('e');
  const exp = Number(expText);
  if (exp >= -4 && exp < 16) {
    const text = String(x); // JS writes these positionally too
    return text.includes('.') ? text : text + '.0';
  }
  const sign = exp < 0 ? '-' : '+';
  return `${mantissa}e${sign}${String(Math.abs(exp)).padStart(2, '0')}`;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}
