/** A raw HTTP client for the cache tests: every header and byte as received, and whether the body was complete. */
import http from 'node:http';

export interface Received {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** False when the connection broke before the response ended. */
  complete: boolean;
}

export function get(
  url: string,
  headers: Record<string, string> = {},
  method: 'GET' | 'HEAD' = 'GET',
): Promise<Received> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let complete = false;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        complete = true;
      });
      res.on('error', () => {});
      res.on('close', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete: complete && res.complete,
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}
