import { describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import { macHexHyp, normaliseMac, parseMac } from '../../src/core/mac.ts';

describe('MAC normalisation (upstream rule)', () => {
  it.each([
    ['AA:BB:CC:DD:EE:FF', 'aa:bb:cc:dd:ee:ff'],
    ['aa-bb-cc-dd-ee-ff', 'aa:bb:cc:dd:ee:ff'],
    ['Aa-bB:cc-DD:ee-ff', 'aa:bb:cc:dd:ee:ff'],
    ['52:54:00:12:34:56', '52:54:00:12:34:56'],
  ])('%s -> %s', (raw, mac) => {
    expect(parseMac(raw)).toBe(mac);
    expect(normaliseMac(raw)).toBe(mac);
  });

  it.each([
    'aabbccddeeff',
    'aabb.ccdd.eeff',
    'aa:bb:cc:dd:ee',
    'aa:bb:cc:dd:ee:ff:00',
    'aa:bb:cc:dd:ee:f',
    'aa:bb:cc:dd:ee:fg',
    'aa:bb:cc:dd:ee:fff',
    '',
    ' aa:bb:cc:dd:ee:ff',
    'aa:bb:cc:dd:ee:ff\n',
  ])('%j is refused with "invalid MAC"', (raw) => {
    expect(parseMac(raw)).toBeNull();
    const err = (() => {
      try {
        normaliseMac(raw);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(BtyError);
    expect((err as BtyError).code).toBe('BTY_ERR_BAD_INPUT');
    expect((err as BtyError).message).toMatch(/^invalid MAC: '/);
  });

  it('hexhyp is the form iPXE puts in URLs', () => {
    expect(macHexHyp('AA:BB:CC:DD:EE:FF')).toBe('aa-bb-cc-dd-ee-ff');
  });
});
