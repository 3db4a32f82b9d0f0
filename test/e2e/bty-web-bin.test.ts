/** bin/bty-web as an operator runs it: start, answer, stop on SIGTERM; bad configuration exits 2. */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freeTcpPort } from '../helpers/ports.ts';

const run = promisify(execFile);
const BIN = new URL('../../bin/bty-web', import.meta.url).pathname;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-bin-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('starts on the embedded defaults, serves the PXE plane, and stops promptly on SIGTERM', async () => {
  const port = await freeTcpPort();
  const child = spawn(BIN, ['--host', '127.0.0.1', '--port', String(port)], {
    env: {
      ...process.env,
      BTY_PATHS_STATE_DIR: dir,
      BTY_CONFIG_FILE: '',
      BTY_CONFIG_DIR: '',
      BTY_PATHS_CATALOG_FILE: new URL('../../scripts/demo-catalog.toml', import.meta.url).pathname,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  try {
    const deadline = Date.now() + 15_000;
    while (!stderr.includes('listening on') && Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`bty-web exited: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(stderr).toContain(`listening on http://127.0.0.1:${port}`);
    expect(stderr).toMatch(/admin password is the default/);
    const res = await fetch(`http://127.0.0.1:${port}/pxe/52:54:00:ab:cd:ef`);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^#!ipxe\n/);
    // The demo catalog make run uses was imported into the empty catalog.
    expect(stderr).toMatch(/catalog seeded from .*demo-catalog\.toml \(3 entries\)/);
    const images = (await (await fetch(`http://127.0.0.1:${port}/images`)).json()) as unknown;
    expect(JSON.stringify(images)).toContain('debian-13-generic-amd64');
  } finally {
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    );
    child.kill('SIGTERM');
    const code = await Promise.race([
      exited,
      new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 10_000)),
    ]);
    if (code === 'hung') child.kill('SIGKILL');
    expect(code).toBe(0);
  }
});

it('a bad port in the environment exits 2 naming the variable', async () => {
  const err = (await run(BIN, [], {
    env: { ...process.env, BTY_PATHS_STATE_DIR: dir, BTY_SERVER_PORT: 'eighty' },
  }).catch((e: unknown) => e)) as { code: number; stderr: string };
  expect(err.code).toBe(2);
  expect(err.stderr).toContain('BTY_SERVER_PORT');
});

it('migrate applies the schema once and then says it is up to date', async () => {
  const state = join(dir, 'migrate');
  const env = { ...process.env, BTY_PATHS_STATE_DIR: state };
  const first = await run(BIN, ['migrate'], { env });
  expect(first.stderr).toMatch(
    /applied 2026-11-29-001-initial, 2026-11-29-002-open-failures-index$/m,
  );
  const second = await run(BIN, ['migrate'], { env });
  expect(second.stdout).toMatch(/is up to date/);
});

it('--version prints the version', async () => {
  const r = await run(BIN, ['--version']);
  expect(r.stdout).toMatch(/^bty-web \d+\.\d+\.\d+/);
});
