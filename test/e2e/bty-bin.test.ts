/**
 * The built `bin/bty` as an operator runs it: a real terminal (a pty from util-linux `script`)
 * for the confirmation prompt and the progress bar, and a real SIGINT mid-flash.
 * `make test` builds dist/ before the tests run.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { makeLoopbackCert } from '../helpers/tls.ts';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { convertImage, makeRawImage, sha256File, type MadeImage } from '../helpers/images.ts';
import { createLoopDevice, isRoot } from '../helpers/loop.ts';

const run = promisify(execFile);
const BTY = new URL('../../bin/bty', import.meta.url).pathname;
const MiB = 1 << 20;

let dir: string;
let raw: MadeImage;
let xz: MadeImage;
let server: FaultServer;

beforeAll(async () => {
  if (!existsSync(new URL('../../dist/src/cli/bin.js', import.meta.url))) {
    throw new Error('dist/ is missing: run `make build` (make test does) before these tests');
  }
  dir = await mkdtemp(join(tmpdir(), 'bty-e2e-'));
  raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 32 * MiB, seed: 11 });
  xz = await convertImage(raw.path, 'img.xz', join(dir, 'disk.img.xz'));
  server = await startFaultServer();
}, 120_000);

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Runs bin/bty on a pseudo-terminal, typing `answer` once the prompt has had time to show. */
function onTerminal(args: string[], answer: string): Promise<{ code: number; screen: string }> {
  return new Promise((resolve, reject) => {
    const cmd = [BTY, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    let answered = false;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      screen += d;
      if (!answered && screen.includes('Continue? [y/N]')) {
        answered = true;
        child.stdin.write(answer);
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ code: code ?? -1, screen });
    });
  });
}

describe('bin/bty on a terminal', () => {
  it('shows the plan and writes nothing when the operator says no', async () => {
    const target = join(dir, 'declined.img');
    await writeFile(target, 'untouched');
    const r = await onTerminal(['flash', xz.path, target], 'n\n');
    expect(r.screen).toContain('bty: flash plan');
    expect(r.screen).toContain('img.xz');
    expect(r.screen).toContain('32.0 MiB on disk');
    expect(r.code).toBe(3);
    expect(r.screen).toContain('declined');
    expect(await readFile(target, 'utf8')).toBe('untouched');
  });

  it('flashes after "y", drawing a progress bar', async () => {
    const target = join(dir, 'confirmed.img');
    const r = await onTerminal(['flash', xz.path, target, '--verify'], 'y\n');
    expect(r.code).toBe(0);
    expect(r.screen).toMatch(/write +\[[#.]+\] +\d+%/);
    expect(r.screen).toContain('read-back: verified');
    expect(await sha256File(target)).toBe(raw.sha256);
  });
});

describe('bin/bty and Ctrl-C', () => {
  it('Ctrl-C at the confirmation prompt cancels (exit 130) and writes nothing', async () => {
    const target = join(dir, 'ctrl-c-at-prompt.img');
    await writeFile(target, 'untouched');
    const r = await onTerminal(['flash', xz.path, target], '\x03');
    expect(r.code).toBe(130);
    expect(r.screen).toContain('BTY_ERR_CANCELLED');
    expect(await readFile(target, 'utf8')).toBe('untouched');
  });

  it('SIGINT mid-flash stops the decompressor, exits 130 and says the target holds partial data', async () => {
    server.serve('/slow.img.xz', { body: { file: xz.path } }, { bytesPerSecond: 2 * MiB });
    // A disk (loop device) when root: that is where partial data stays behind.
    const disk = isRoot() ? await createLoopDevice({ sizeBytes: 40 * MiB }) : null;
    onTestFinished(() => disk?.detach());
    const target = disk?.path ?? join(dir, 'interrupted.img');
    const child = spawn(BTY, ['flash', server.urlFor('/slow.img.xz'), target, '--yes', '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    let signalled = false;
    let xzPid = '';
    child.stdout.on('data', (d: string) => {
      stdout += d;
      if (
        !signalled &&
        /"phase":"write"/.test(stdout) &&
        /"source_bytes_done":[1-9]/.test(stdout)
      ) {
        signalled = true;
        // Remember bty's own xz child, then interrupt bty.
        void run('pgrep', ['-P', String(child.pid), '-x', 'xz']).then(
          (r) => {
            xzPid = r.stdout.trim();
            child.kill('SIGINT');
          },
          () => child.kill('SIGINT'),
        );
      }
    });
    child.stderr.on('data', (d: string) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(signalled).toBe(true);
    expect(code).toBe(130);
    const last = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
      type: string;
      error: { code: string; message: string };
    };
    expect(last.type).toBe('error');
    expect(last.error.code).toBe('BTY_ERR_CANCELLED');
    expect(last.error.message).toMatch(
      disk ? /the target holds partial data/ : /partial file was removed/,
    );
    expect(stderr).toMatch(/cancelling/);
    // bty's xz child was stopped with it.
    expect(xzPid).toMatch(/^\d+$/);
    expect(existsSync(`/proc/${xzPid}`)).toBe(false);
  });
});

describe('bin/bty and a second Ctrl-C', () => {
  it('exits at once and still removes the partial file', async () => {
    server.serve('/slower.img.xz', { body: { file: xz.path } }, { bytesPerSecond: 1 * MiB });
    const target = join(dir, 'twice.img');
    await writeFile(target, 'old contents');
    const child = spawn(
      BTY,
      ['flash', server.urlFor('/slower.img.xz'), target, '--yes', '--json'],
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    let out = '';
    let signalled = false;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      if (!signalled && /"source_bytes_done":[1-9]/.test(out)) {
        signalled = true;
        child.kill('SIGINT');
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(signalled).toBe(true);
    expect(code).toBe(130);
    expect(existsSync(join(dir, '.twice.img.bty-partial'))).toBe(false);
    expect(await readFile(target, 'utf8')).toBe('old contents');
  });
});

describe('bin/bty over HTTPS', () => {
  let tlsServer: FaultServer;
  let caFile: string;

  beforeAll(async () => {
    const { keyFile: key, certFile } = await makeLoopbackCert(dir);
    caFile = certFile;
    tlsServer = await startFaultServer({
      tls: { key: await readFile(key, 'utf8'), cert: await readFile(caFile, 'utf8') },
    });
    tlsServer.serve('/disk.img.xz', { body: { file: xz.path } }, { cutEveryBytes: 2 * MiB });
  });

  afterAll(async () => {
    await tlsServer?.close();
  });

  it('flashes from an https:// URL whose CA is trusted, resuming over TLS', async () => {
    const target = join(dir, 'https.img');
    const r = await run(
      BTY,
      ['flash', tlsServer.urlFor('/disk.img.xz'), target, '--yes', '--json'],
      {
        env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile },
      },
    );
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      ok: boolean;
      resumes: number;
    };
    expect(result.ok).toBe(true);
    expect(result.resumes).toBeGreaterThan(0);
    expect(await sha256File(target)).toBe(raw.sha256);
  });

  it('refuses an untrusted certificate at once with a clear error', async () => {
    const r = await run(BTY, [
      'flash',
      tlsServer.urlFor('/disk.img.xz'),
      join(dir, 'x.img'),
      '--yes',
    ]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/TLS certificate of 127\.0\.0\.1:\d+ is not trusted/);
    expect(r.stderr).toMatch(/NODE_EXTRA_CA_CERTS/);
  });
});
