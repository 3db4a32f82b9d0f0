/**
 * A registry behind HTTPS (bin/bty, trusting a test CA through NODE_EXTRA_CA_CERTS): the TLS path
 * works, and a redirect from HTTPS to plain HTTP is refused rather than followed.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeLoopbackCert } from '../helpers/tls.ts';
import { pushArtifact, startRegistry, type Registry } from '../helpers/registry.ts';

const run = promisify(execFile);
const BTY = new URL('../../bin/bty', import.meta.url).pathname;

let dir: string;
let reg: Registry;
let tls: https.Server;
let plain: http.Server;
let caFile: string;
/** Which requests the TLS front sends to plain HTTP instead of passing them on. */
let downgrade = false;

async function bty(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(BTY, args, {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile, BTY_ORAS_INSECURE: '' },
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-oras-tls-'));
  const { keyFile: key, certFile } = await makeLoopbackCert(dir);
  caFile = certFile;
  reg = await startRegistry();
  await pushArtifact(reg, 'os/disk', '1', {
    layers: [
      { data: Buffer.alloc(4096, 1), mediaType: 'application/octet-stream', title: 'a.img' },
    ],
  });
  // The plain-HTTP end of a downgrade: it would serve anything.
  plain = http.createServer((req, res) => {
    const out = http.request(`${reg.url}${req.url ?? '/'}`, { headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    req.pipe(out);
  });
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  const plainPort = (plain.address() as AddressInfo).port;
  // The HTTPS registry: a TLS terminator in front of the real one.
  tls = https.createServer(
    { key: await readFile(key), cert: await readFile(caFile) },
    (req, res) => {
      if (downgrade && req.url?.includes('/manifests/')) {
        res.writeHead(307, { location: `http://127.0.0.1:${plainPort}${req.url}` }).end();
        return;
      }
      const out = http.request(
        `${reg.url}${req.url ?? '/'}`,
        {
          method: req.method ?? 'GET',
          headers: req.headers,
        },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      req.pipe(out);
    },
  );
  await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
}, 60_000);

afterAll(async () => {
  tls?.closeAllConnections();
  plain?.closeAllConnections();
  await new Promise<void>((resolve) => (tls ? tls.close(() => resolve()) : resolve()));
  await new Promise<void>((resolve) => (plain ? plain.close(() => resolve()) : resolve()));
  await reg?.stop();
  await rm(dir, { recursive: true, force: true });
});

// `127.1` is not a name bty treats as local, so it speaks HTTPS to it; it connects to 127.0.0.1.
const ref = () => `oras://127.1:${(tls.address() as AddressInfo).port}/os/disk:1`;

it('an HTTPS registry with a trusted certificate resolves and serves the blob', async () => {
  downgrade = false;
  const r = await bty('inspect', ref(), '--json');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect((JSON.parse(r.stdout) as { resolved: { title: string } }).resolved.title).toBe('a.img');
});

it('a redirect from HTTPS to plain HTTP is refused, not followed', async () => {
  downgrade = true;
  const r = await bty('inspect', ref());
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/refusing a redirect from https to plain http/);
});
