/** bty-tftp: argument errors in-process, and the real launcher started and stopped by signal. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tftpGet } from '../../src/tftp/client.ts';
import { main } from '../../src/tftp/main.ts';
import { makeTftpRoot, type TftpRoot } from './fixtures.ts';

const BIN = new URL('../../bin/bty-tftp', import.meta.url).pathname;
let root: TftpRoot;

beforeAll(async () => {
  root = await makeTftpRoot();
});
afterAll(async () => {
  await root?.remove();
});

async function runMain(argv: string[], isRoot = false) {
  let out = '';
  let err = '';
  const code = await main(
    argv,
    { out: (t) => (out += t), err: (t) => (err += t) },
    { isRoot, onStop: (stop) => stop() },
  );
  return { code, out, err };
}

describe('bty-tftp arguments', () => {
  it('--help and --version', async () => {
    const help = await runMain(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/usage: bty-tftp --root DIR/);
    const version = await runMain(['--version']);
    expect(version.code).toBe(0);
    expect(version.out).toMatch(/^bty-tftp \d+\.\d+\.\d+/);
  });

  it('needs --root', async () => {
    const r = await runMain(['--port', '6969']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--root DIR is required/);
  });

  it('asks for --port when not running as root, and defaults to 69 as root', async () => {
    const r = await runMain(['--root', root.dir]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/port 69 needs root; .*--port N/);
    const asRoot = await runMain(['--root', root.dir, '--address', '127.0.0.1'], true);
    // As root the default is port 69 (it may already be taken on this machine).
    expect(asRoot.err).toMatch(/127\.0\.0\.1:69\b/);
  });

  it('refuses a bad --port, a bad --workers and an unknown option', async () => {
    expect((await runMain(['--root', root.dir, '--port', 'x'])).code).toBe(2);
    expect((await runMain(['--root', root.dir, '--port', '70000'])).code).toBe(2);
    for (const workers of ['x', '1.5', '257']) {
      const bad = await runMain(['--root', root.dir, '--port', '0', '--workers', workers]);
      expect(bad.code).toBe(2);
      expect(bad.err).toMatch(/--workers must be a number from 0 to 256/);
    }
    const unknown = await runMain(['--root', root.dir, '--frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/frobnicate/);
  });

  it('a missing root or a file as root is a clear error with a non-zero exit', async () => {
    const missing = await runMain(['--root', join(root.dir, 'nope'), '--port', '0']);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/BTY_ERR_BAD_INPUT: TFTP root .*nope cannot be used/);
    expect(missing.err).toMatch(/hint: /);
    const file = await runMain(['--root', join(root.dir, 'rand.bin'), '--port', '0']);
    expect(file.code).toBe(2);
    expect(file.err).toMatch(/is not a folder/);
  });

  it('a port already taken is a clear error, exit 1', async () => {
    const holder = createSocket('udp4');
    await new Promise<void>((resolve) => holder.bind(0, '127.0.0.1', resolve));
    try {
      const taken = String(holder.address().port);
      const r = await runMain(['--root', root.dir, '--address', '127.0.0.1', '--port', taken]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken}: .*EADDRINUSE`));
    } finally {
      holder.close();
    }
  });
});

describe('bin/bty-tftp', () => {
  // Transfers on worker threads (the default with several CPUs), and on the main thread.
  for (const [signal, workers] of [
    ['SIGTERM', '2'],
    ['SIGINT', '0'],
  ] as const) {
    it(`serves with --workers ${workers}, logs the transfer, and exits 0 on ${signal}`, async () => {
      const args = ['--root', root.dir, '--address', '127.0.0.1', '--port', '0'];
      const child = spawn(BIN, [...args, '--workers', workers], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      try {
        for (let i = 0; i < 300 && !/listening on/.test(stderr); i++) {
          if (child.exitCode !== null) throw new Error(`bty-tftp exited: ${stderr}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(stderr)?.[1]);
        expect(port).toBeGreaterThan(0);
        expect(stderr.match(/listening/g)).toHaveLength(1);
        const got = await tftpGet({ host: '127.0.0.1', port, file: 'ipxe.efi', blksize: 1468 });
        const expected = await readFile(join(root.dir, 'ipxe.efi'));
        expect(createHash('sha256').update(got.data).digest('hex')).toBe(
          createHash('sha256').update(expected).digest('hex'),
        );
        process.kill(child.pid!, signal);
        const code = await Promise.race([
          exited,
          new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000)),
        ]);
        expect(code).toBe(0);
        expect(stderr).toMatch(/RRQ "ipxe\.efi" octet 850528 bytes \[blksize=1468\] ok/);
      } finally {
        if (child.exitCode === null) process.kill(child.pid!, 'SIGKILL');
      }
    });
  }
});
