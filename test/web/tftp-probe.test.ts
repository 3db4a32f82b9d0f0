/**
 * The TFTP probe behind the dashboard's readiness row, against a real TFTP server (tftpd-hpa's
 * in.tftpd on a loopback port), and the row itself with `[tftp] enabled`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/web/config.ts';
import { probeTftp } from '../../src/web/tftp-probe.ts';
import { operator, startUiServer } from '../helpers/ui.ts';

let dir: string;
let tftpd: ChildProcess;
let port: number;

/** A UDP port nobody listens on right now. */
async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const p = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-tftp-probe-'));
  await writeFile(join(dir, 'undionly.kpxe'), Buffer.alloc(5000, 7), { mode: 0o644 });
  // in.tftpd drops to its own user: the folder must be readable by others.
  await chmod(dir, 0o755);
  port = await freeUdpPort();
  tftpd = spawn(
    '/usr/sbin/in.tftpd',
    ['--foreground', '--address', `127.0.0.1:${port}`, '--secure', dir],
    {
      stdio: 'ignore',
    },
  );
  // Until it answers (bounded).
  for (let i = 0; i < 50; i++) {
    if ((await probeTftp('127.0.0.1', port, 'undionly.kpxe', 200)).state !== 'silent') return;
  }
  throw new Error('in.tftpd did not start');
});

afterAll(async () => {
  if (tftpd?.pid) process.kill(tftpd.pid, 'SIGTERM');
  await rm(dir, { recursive: true, force: true });
});

describe('probeTftp', () => {
  it('a server holding the file: serving', async () => {
    const result = await probeTftp('127.0.0.1', port, 'undionly.kpxe');
    expect(result).toEqual({ state: 'serving', detail: `127.0.0.1:${port} serves undionly.kpxe` });
  });

  it('a server without the file: it answers, with its error', async () => {
    const result = await probeTftp('127.0.0.1', port, 'ipxe.efi');
    expect(result.state).toBe('missing-file');
    expect(result.detail).toMatch(new RegExp(`^127\\.0\\.0\\.1:${port} answered: .+`));
  });

  it('nobody listening: silent, within the timeout', async () => {
    const idle = await freeUdpPort();
    const result = await probeTftp('127.0.0.1', idle, 'undionly.kpxe', 300);
    expect(result.state).toBe('silent');
  });
});

describe('the dashboard readiness row', () => {
  const rowOf = (html: string) => /<li[^>]*data-check="tftp"[^>]*>/.exec(html)?.[0] ?? '';

  it('with [tftp] enabled: ready when the server answers, failing when nothing does', async () => {
    for (const [target, ok] of [
      [port, 'true'],
      [await freeUdpPort(), 'false'],
    ] as const) {
      const config = await loadConfig({
        configPaths: [],
        etcDir: join(dir, 'no-etc'),
        env: {
          BTY_TFTP_ENABLED: 'true',
          BTY_TFTP_HOST: '127.0.0.1',
          BTY_TFTP_PORT: String(target),
        },
      });
      const server = await startUiServer({ config });
      try {
        const html = await (await operator(server)).page('/ui/dashboard');
        expect(rowOf(html)).toContain(`data-ok="${ok}"`);
        if (ok === 'false') expect(html).toContain('[tftp] is enabled but nothing answers');
      } finally {
        await server.close();
      }
    }
  });

  it('without it: advice only', async () => {
    const server = await startUiServer();
    try {
      const html = await (await operator(server)).page('/ui/dashboard');
      expect(rowOf(html)).toContain('data-ok="info"');
    } finally {
      await server.close();
    }
  });
});
