import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { isBtyError } from '../../src/core/errors.ts';
import { redactUrl } from '../../src/flash/sources/http.ts';
import { openImageSource } from '../../src/flash/sources/index.ts';

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

describe('an error the server names', () => {
  it('X-Bty-Error on a 5xx becomes that error with the server’s words; without it, retries', async () => {
    let hits = 0;
    const server = http.createServer((req, res) => {
      hits++;
      if (req.url === '/named') {
        res.writeHead(502, {
          'content-type': 'application/json',
          'x-bty-error': 'BTY_ERR_INTEGRITY',
          'x-bty-detail': 'integrity: disk.img does not match the catalog sha256',
        });
        res.end(
          JSON.stringify({ detail: 'integrity: disk.img does not match the catalog sha256' }),
        );
      } else {
        res.writeHead(404, { 'x-bty-error': 'NOT_A_CODE' });
        res.end('no');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const named = await openImageSource(`${base}/named`)
        .then((s) => s.readHead(16))
        .catch((e: unknown) => e);
      expect(isBtyError(named, 'BTY_ERR_INTEGRITY')).toBe(true);
      expect((named as Error).message).toContain('does not match the catalog sha256');
      // One request: a named error is final, not retried.
      expect(hits).toBe(1);
      const viaHead = await fetch(`${base}/named`, { method: 'HEAD' });
      expect(viaHead.headers.get('x-bty-detail')).toContain('catalog sha256');
      // An unknown code is no code: the plain status error.
      const other = await openImageSource(`${base}/other`)
        .then((s) => s.readHead(16))
        .catch((e: unknown) => e);
      expect(isBtyError(other, 'BTY_ERR_HTTP_STATUS')).toBe(true);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
