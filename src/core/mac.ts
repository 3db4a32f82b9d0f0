/**
 * MAC addresses as bty-web and the agent exchange them: lower-case, colon-separated. Upstream's
 * rule: `-` counts as `:`, exactly six parts of two hex digits each; `aabbccddeeff` and dotted
 * forms are refused.
 */
import { BtyError } from './errors.ts';
import { reprString } from './python-repr.ts';

const PART = /^[0-9a-f]{2}$/;

/** The canonical form (`aa:bb:cc:dd:ee:ff`), or null when `raw` is not a MAC. */
export function parseMac(raw: string): string | null {
  const parts = raw.toLowerCase().replaceAll('-', ':').split(':');
  if (parts.length !== 6 || !parts.every((p) => PART.test(p))) return null;
  return parts.join(':');
}

/** The canonical form, or BTY_ERR_BAD_INPUT with upstream's message (`invalid MAC: '<raw>'`). */
export function normaliseMac(raw: string): string {
  const mac = parseMac(raw);
  if (mac === null) {
    throw new BtyError('BTY_ERR_BAD_INPUT', `invalid MAC: ${reprString(raw)}`, {
      details: { field: 'mac' },
    });
  }
  return mac;
}

/** `aa-bb-cc-dd-ee-ff`: iPXE's `${mac:hexhyp}`, as boot URLs carry it. */
export function macHexHyp(mac: string): string {
  return normaliseMac(mac).replaceAll(':', '-');
}
