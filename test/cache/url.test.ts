/** The serve-URL shape, byte-exact with withcache (upstream-web §14.3). */
import { describe, expect, it } from 'vitest';
import {
  blobName,
  blobPath,
  blobToken,
  cacheKey,
  decodeBlobToken,
  originOfBlobPath,
  serveUrl,
} from '../../src/cache/url.ts';
import { imageRefForSrc } from '../../src/core/refs.ts';

describe('cache URLs', () => {
  it('names an oras origin repo%3Atag (the spec example)', () => {
    const origin = 'oras://ghcr.io/owner/repo:tag';
    expect(blobName(origin)).toBe('repo%3Atag');
    expect(blobToken(origin)).toBe('b3JhczovL2doY3IuaW8vb3duZXIvcmVwbzp0YWc');
    expect(serveUrl('http://cache:8081/', origin)).toBe(
      'http://cache:8081/b/b3JhczovL2doY3IuaW8vb3duZXIvcmVwbzp0YWc/repo%3Atag',
    );
  });

  it('keeps an http basename and drops query and fragment', () => {
    const origin = 'https://x/y/demo.img.gz?sig=a+b#frag';
    expect(blobName(origin)).toBe('demo.img.gz');
    expect(blobPath('https://x/y/demo.img.gz')).toBe(
      `/b/${Buffer.from('https://x/y/demo.img.gz').toString('base64url')}/demo.img.gz`,
    );
  });

  it('falls back to download and percent-encodes like Python quote', () => {
    expect(blobName('https://x/')).toBe('download');
    expect(blobName('https://x')).toBe('download');
    expect(blobName('https://x/a/my disk (1)~v_2.img')).toBe('my%20disk%20%281%29~v_2.img');
    expect(blobName('https://x/a/ü%20.img')).toBe('%C3%BC%2520.img');
  });

  it('uses URL-safe base64 without padding', () => {
    // 0xfb 0xff in the input produce '+' and '/' in plain base64: '-' and '_' here.
    const origin = 'https://x/\u00fb\u00ff?>>';
    const token = blobToken(origin);
    expect(token).not.toMatch(/[+/=]/);
    expect(token).toBe(
      Buffer.from(origin)
        .toString('base64')
        .replace(/\+/g, '-')
        .replace(/\//g, '_')
        .replace(/=+$/, ''),
    );
    expect(decodeBlobToken(token)).toBe(origin);
  });

  it('decodes tokens with or without padding, refuses empty and undecodable ones', () => {
    expect(decodeBlobToken('aHR0cDovL3gvYQ')).toBe('http://x/a');
    expect(decodeBlobToken('aHR0cDovL3gvYQ==')).toBe('http://x/a');
    expect(decodeBlobToken('')).toBeNull();
    expect(decodeBlobToken('a')).toBeNull();
    expect(decodeBlobToken('ab+/')).toBeNull();
    expect(decodeBlobToken('_w')).toBeNull(); // 0xff: not UTF-8
  });

  it('finds the origin of a request path', () => {
    const origin = 'https://x/y/demo.img';
    expect(originOfBlobPath(blobPath(origin))).toBe(origin);
    expect(originOfBlobPath(`${blobPath(origin)}?x=1`)).toBe(origin);
    expect(originOfBlobPath('/b/!!/x')).toBeNull();
    expect(originOfBlobPath('/healthz')).toBeUndefined();
  });

  it('keys an origin by its image ref', () => {
    expect(cacheKey('HTTPS://X:443/a.img')).toBe(imageRefForSrc('https://x/a.img'));
    expect(() => cacheKey('ftp://x/a')).toThrow(/unsupported src scheme/);
  });
});
