/**
 * Browser tests' parts: Debian's Chromium driven by playwright-core (headless, with the flags
 * this closed network needs: no background connections, no QUIC), and bin/bty-web started as
 * an operator runs it, on a loopback port with its own state folder. Both are stopped by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { freeTcpPort } from './ports.ts';

export const CHROMIUM = '/usr/bin/chromium';

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Closes the browser, and kills its process if closing hangs. */
export async function closeChromium(browser: Browser | undefined): Promise<void> {
  if (!browser) return;
  const pid = (browser as { process?: () => ChildProcess | null }).process?.()?.pid;
  await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000))]);
  if (pid !== undefined) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

export interface WebProcess {
  base: string;
  dir: string;
  stderr(): string;
  /** SIGTERM, then SIGKILL after 10 s: the exit code, and whether it had to be killed. */
  stop(): Promise<{ code: number | null; hung: boolean }>;
}

const BIN = new URL('../../bin/bty-web', import.meta.url).pathname;

/** bin/bty-web on 127.0.0.1 with a fresh state folder and `env` (e.g. BTY_ADMIN_PASSWORD). */
export async function startBtyWeb(env: Record<string, string> = {}): Promise<WebProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'bty-ui-e2e-'));
  const port = await freeTcpPort();
  const child = spawn(BIN, ['--host', '127.0.0.1', '--port', String(port)], {
    env: {
      ...process.env,
      BTY_PATHS_STATE_DIR: dir,
      BTY_CONFIG_FILE: '',
      BTY_CONFIG_DIR: '',
      BTY_PATHS_CATALOG_FILE: '',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const deadline = Date.now() + 20_000;
  while (!stderr.includes('listening on')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`bty-web did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base: `http://127.0.0.1:${port}`,
    dir,
    stderr: () => stderr,
    async stop() {
      const exited = new Promise<number | null>((resolve) => {
        if (child.exitCode !== null) resolve(child.exitCode);
        else child.once('exit', (code) => resolve(code));
      });
      if (child.exitCode === null) child.kill('SIGTERM');
      const hung = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((r) => setTimeout(() => r(true), 10_000)),
      ]);
      if (hung) child.kill('SIGKILL');
      const code = await exited;
      await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
      return { code, hung };
    },
  };
}
