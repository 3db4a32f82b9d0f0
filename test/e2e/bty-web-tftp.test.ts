/**
 * bin/bty-web as a one-box PXE server (issue 7): `[tftp] enabled` starts the built-in TFTP server,
 * whose root gets Debian's iPXE boot files (never replacing one already there); `[boot] seed_dir`
 * seeds the boot folder; a UDP port held by another server is a clear start-up error; and
 * `bty-web cache …` works on the configured cache folder.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freeTcpPort } from '../helpers/ports.ts';

const run = promisify(execFile);
const BIN = new URL('../../bin/bty-web', import.meta.url).pathname;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-tftp-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A UDP port that was free a moment ago. */
async function freeUdpPort(): Promise<number> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(resolve));
  return port;
}

function baseEnv(state: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    ...process.env,
    BTY_PATHS_STATE_DIR: state,
    BTY_CONFIG_FILE: '',
    BTY_CONFIG_DIR: '',
    BTY_PATHS_CATALOG_FILE: join(state, 'no-catalog.toml'),
    ...extra,
  };
}

it('serves the iPXE boot files over TFTP, seeds the boot folder, and stops on SIGTERM', async () => {
  const state = join(dir, 'one');
  const seed = join(dir, 'seed');
  await mkdir(join(state, 'tftp'), { recursive: true });
  await mkdir(seed, { recursive: true });
  await writeFile(join(seed, 'custom.ipxe'), '#!ipxe\necho seeded\n');
  // An operator's own ipxe.efi in the TFTP root is kept as it is.
  await writeFile(join(state, 'tftp', 'ipxe.efi'), 'operator build');
  const port = await freeTcpPort();
  const udp = await freeUdpPort();
  const child = spawn(BIN, ['--host', '127.0.0.1', '--port', String(port)], {
    env: baseEnv(state, {
      BTY_TFTP_ENABLED: 'true',
      BTY_TFTP_HOST: '127.0.0.1',
      BTY_TFTP_PORT: String(udp),
      BTY_BOOT_SEED_DIR: seed,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  try {
    const deadline = Date.now() + 15_000;
    while (!stderr.includes('TFTP serving') && Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`bty-web exited: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(stderr).toContain(`TFTP serving ${join(state, 'tftp')} on 127.0.0.1:${udp}`);
    expect(stderr).toMatch(/copied undionly\.kpxe, snponly\.efi/);
    expect(stderr).toMatch(/boot folder seeded from .*: custom\.ipxe/);

    // A real TFTP client (curl) gets the packaged file byte for byte, with a large block size.
    const out = join(dir, 'undionly.kpxe');
    await run('curl', [
      '-sS',
      '--tftp-blksize',
      '1468',
      '-o',
      out,
      `tftp://127.0.0.1:${udp}/undionly.kpxe`,
    ]);
    expect((await readFile(out)).equals(await readFile('/usr/lib/ipxe/undionly.kpxe'))).toBe(true);
    const kept = join(dir, 'kept.efi');
    await run('curl', ['-sS', '-o', kept, `tftp://127.0.0.1:${udp}/ipxe.efi`]);
    expect(await readFile(kept, 'utf8')).toBe('operator build');
    expect(stderr).toMatch(/tftp: .*undionly\.kpxe/);

    const seeded = await fetch(`http://127.0.0.1:${port}/boot/custom.ipxe`);
    expect(await seeded.text()).toBe('#!ipxe\necho seeded\n');
  } finally {
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const code = await Promise.race([
      exited,
      new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 10_000)),
    ]);
    if (code === 'hung') child.kill('SIGKILL');
    expect(code).toBe(0);
  }
  // The UDP port is released.
  const again = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    again.once('error', reject);
    again.bind(udp, '127.0.0.1', resolve);
  });
  await new Promise<void>((resolve) => again.close(resolve));
});

it('a TFTP port held by another server is a start-up error that names the way out', async () => {
  const holder: Socket = createSocket('udp4');
  await new Promise<void>((resolve) => holder.bind(0, '127.0.0.1', resolve));
  try {
    const port = await freeTcpPort();
    const err = (await run(BIN, ['--host', '127.0.0.1', '--port', String(port)], {
      env: baseEnv(join(dir, 'two'), {
        BTY_TFTP_ENABLED: 'true',
        BTY_TFTP_HOST: '127.0.0.1',
        BTY_TFTP_PORT: String(holder.address().port),
      }),
    }).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(err.code).toBe(2);
    expect(err.stderr).toMatch(/another TFTP server holds it/);
    expect(err.stderr).toMatch(/hint: .*\[tftp\] enabled = false/);
    // The HTTP side it had started is closed again: the port is free.
    const probe = http.createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen(port, '127.0.0.1', resolve);
    });
    await new Promise((resolve) => probe.close(resolve));
  } finally {
    await new Promise<void>((resolve) => holder.close(resolve));
  }
});

it('bty-web cache fetch/list work on the configured cache folder', async () => {
  const body = randomBytes(300_000);
  const sha = createHash('sha256').update(body).digest('hex');
  const origin = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/img/disk.raw`;
  const state = join(dir, 'three');
  try {
    const env = baseEnv(state, {});
    await run(BIN, ['cache', 'fetch', url, '--sha256', sha], { env });
    const listed = await run(BIN, ['cache', 'list', '--json'], { env });
    const listing = JSON.parse(listed.stdout) as {
      used_bytes: number;
      entries: Array<{ origin: string; digest: string }>;
    };
    expect(listing.used_bytes).toBe(body.length);
    expect(listing.entries).toMatchObject([{ origin: url, digest: `sha256:${sha}` }]);
    const blob = await readFile(join(state, 'cache', 'blobs', 'sha256', sha));
    expect(blob.equals(body)).toBe(true);
    const usage = (await run(BIN, ['cache', 'nonsense'], { env }).catch((e: unknown) => e)) as {
      code: number;
    };
    expect(usage.code).toBe(2);
  } finally {
    await new Promise((resolve) => origin.close(resolve));
  }
});
