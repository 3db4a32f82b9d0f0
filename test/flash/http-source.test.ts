import { describe, expect, it } from 'vitest';
import { redactUrl } from '../../src/flash/sources/http.ts';

describe('redactUrl', () => {
  it.each([
    ['https://user:pw@host/a.img', 'https://host/a.img'],
    [
      'https://cdn/x.img.zst?X-Amz-Signature=abc&X-Amz-Credential=k&response=1',
      'https://cdn/x.img.zst?X-Amz-Signature=<redacted>&X-Amz-Credential=<redacted>&response=1',
    ],
    ['http://host:8080/plain.img?v=2#frag', 'http://host:8080/plain.img?v=2#frag'],
    ['https://h/t?token=s3cr3t', 'https://h/t?token=<redacted>'],
  ])('%s -> %s', (url, shown) => {
    expect(redactUrl(url)).toBe(shown);
  });
});
