/**
 * Runs wrk with storm.lua: exactly `count` GET requests over `connections` keep-alive
 * connections, request i to line (i mod N) of the paths file, and returns what storm.lua reports.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const SCRIPT = join(import.meta.dirname, 'storm.lua');
const RESULT = 'bench-pxe-result ';
const THREAD_DONE = 'bench-pxe-thread-done';
/** wrk's own per-request timeout: a slower answer counts as a timeout error. */
export const REQUEST_TIMEOUT_S = 2;

export interface WrkOptions {
  /** `http://127.0.0.1:<port>` */
  url: string;
  pathsFile: string;
  count: number;
  connections: number;
  threads: number;
  /** Upper bound of the whole load in seconds (wrk's -d); reached only when answers go missing. */
  limitSeconds: number;
}

/** What storm.lua's done() prints, times in microseconds. */
export interface WrkResult {
  threads: number;
  sent: number;
  received: number;
  non2xx: number;
  statuses: Record<string, number>;
  /** From the first request sent to the last response received. */
  wallUs: number;
  errors: { connect: number; read: number; write: number; timeout: number; status: number };
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
}

export function runWrk(options: WrkOptions): Promise<WrkResult> {
  const threads = Math.max(1, Math.min(options.threads, options.count, options.connections));
  const args = [
    '-t',
    String(threads),
    '-c',
    String(options.connections),
    '-d',
    `${options.limitSeconds}s`,
    '--timeout',
    `${REQUEST_TIMEOUT_S}s`,
    '-s',
    SCRIPT,
    options.url,
    '--',
    options.pathsFile,
    String(options.count),
    String(threads),
  ];
  return new Promise((done, fail) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let nudger: NodeJS.Timeout | undefined;
    // wrk's main thread sleeps for the whole -d; SIGINT ends that sleep once every thread is
    // done. Repeated, because one that lands before wrk installs its handler (or just before it
    // starts sleeping) does not end the sleep.
    const nudge = () => {
      try {
        process.kill(child.pid ?? 0, 'SIGINT');
      } catch {
        // exited
      }
    };
    const killer = setTimeout(() => child.kill('SIGKILL'), (options.limitSeconds + 30) * 1000);
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      const finished = stdout.split(THREAD_DONE).length - 1;
      if (finished >= threads && nudger === undefined) {
        nudge();
        nudger = setInterval(nudge, 200);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr = (stderr + text).slice(-4000);
    });
    child.once('error', (err) => {
      clearTimeout(killer);
      clearInterval(nudger);
      fail(new Error(`cannot run wrk (Debian package wrk): ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(killer);
      clearInterval(nudger);
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT));
      if (line === undefined) {
        const why = signal !== null ? `was killed (${signal})` : `exited with ${code}`;
        fail(new Error(`wrk ${why} without a result: ${(stderr || stdout).trim().slice(-800)}`));
        return;
      }
      try {
        done(JSON.parse(line.slice(RESULT.length)) as WrkResult);
      } catch (err) {
        fail(new Error(`cannot read wrk's result line ${line}: ${(err as Error).message}`));
      }
    });
  });
}
