/**
 * The one TFTP client both servers are measured with: atftp (0.8 or newer), a C client that can
 * ask for `blksize` and `windowsize` (RFC 7440). Every fetch is one atftp process, timed from
 * spawn to exit, killed by its PID when it overruns; fetched files are checked by sha256.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';

export interface TftpOptions {
  /** RFC 2348 block size; null sends no option (512-byte blocks). */
  blksize: number | null;
  /** RFC 7440 window size; null sends no option (one block per ACK). */
  windowsize: number | null;
}

export interface FetchTarget {
  /** Command prefix of the client's side (e.g. `nsenter --net=…`), empty on loopback. */
  prefix: string[];
  host: string;
  port: number;
  remote: string;
}

export interface FetchResult {
  ok: boolean;
  ms: number;
  /** atftp's exit status and last output line, when it failed. */
  error: string | null;
}

export function atftpArgs(options: TftpOptions, trace = false): string[] {
  const args: string[] = [];
  if (options.blksize !== null) args.push('--option', `blksize ${options.blksize}`);
  if (options.windowsize !== null) args.push('--option', `windowsize ${options.windowsize}`);
  if (trace) args.push('--trace');
  return args;
}

/** The options as the report shows them, e.g. `blksize 1468, windowsize 16`. */
export function optionsText(options: TftpOptions): string {
  const parts: string[] = [];
  if (options.blksize !== null) parts.push(`blksize ${options.blksize}`);
  if (options.windowsize !== null) parts.push(`windowsize ${options.windowsize}`);
  return parts.length === 0 ? 'none (512-byte blocks)' : parts.join(', ');
}

interface Exit {
  code: number | null;
  output: string;
  ms: number;
}

function runTimed(command: string[], limitMs: number): Promise<Exit> {
  return new Promise((done, fail) => {
    const [file, ...args] = command;
    if (file === undefined) throw new Error('empty command');
    const t0 = process.hrtime.bigint();
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (t: string) => {
      // Only the start (the OACK) and the end (an error) are ever read.
      output = output.length < 64_000 ? output + t : output.slice(0, 32_000) + t.slice(-32_000);
    };
    child.stdout.setEncoding('utf8').on('data', keep);
    child.stderr.setEncoding('utf8').on('data', keep);
    const timer = setTimeout(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
    }, limitMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      fail(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      done({ code, output, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
  });
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return lines[lines.length - 1] ?? '';
}

/** One fetch of `target.remote` into `local`. */
export async function fetchOnce(
  target: FetchTarget,
  options: TftpOptions,
  local: string,
  limitMs: number,
): Promise<FetchResult> {
  const command = [
    ...target.prefix,
    'atftp',
    ...atftpArgs(options),
    ...['-g', '-r', target.remote, '-l', local, target.host, String(target.port)],
  ];
  const r = await runTimed(command, limitMs);
  const ok = r.code === 0;
  return {
    ok,
    ms: r.ms,
    error: ok
      ? null
      : `atftp ${r.code === null ? `killed after ${limitMs} ms` : `exited ${r.code}`}: ${lastLine(r.output)}`,
  };
}

/** Starts `count` fetches at once; resolves when the last one ends, with the wall time of all. */
export async function fetchConcurrently(
  target: FetchTarget,
  options: TftpOptions,
  locals: string[],
  limitMs: number,
): Promise<{ wallMs: number; fetches: FetchResult[] }> {
  const t0 = process.hrtime.bigint();
  const fetches = await Promise.all(
    locals.map((local) => fetchOnce(target, options, local, limitMs)),
  );
  return { wallMs: Number(process.hrtime.bigint() - t0) / 1e6, fetches };
}

/** atftp erases the list's last ", " with backspaces: apply them as a terminal would. */
function withBackspacesApplied(text: string): string {
  const out: string[] = [];
  for (const ch of text) {
    if (ch === '\b') out.pop();
    else out.push(ch);
  }
  return out.join('');
}

/**
 * The options the server granted, from atftp's trace of one fetch: the OACK's text (`blksize:
 * 1468, windowsize: 16`), or null when the server answered with plain DATA (no option taken).
 */
export async function grantedOptions(
  target: FetchTarget,
  options: TftpOptions,
  local: string,
  limitMs: number,
): Promise<{ ok: boolean; oack: string | null; error: string | null }> {
  const command = [
    ...target.prefix,
    'atftp',
    ...atftpArgs(options, true),
    ...['-g', '-r', target.remote, '-l', local, target.host, String(target.port)],
  ];
  const r = await runTimed(command, limitMs);
  const oack = /received OACK <([^>]*)>/.exec(r.output)?.[1] ?? null;
  return {
    ok: r.code === 0,
    oack: oack === null ? null : withBackspacesApplied(oack).replace(/,\s*$/, '').trim(),
    error: r.code === 0 ? null : lastLine(r.output),
  };
}

/** How long starting the client takes (`atftp --version` through the same prefix), in ms. */
export async function clientStartMs(prefix: string[]): Promise<number> {
  const r = await runTimed([...prefix, 'atftp', '--version'], 10_000);
  return r.ms;
}

export async function sha256File(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}
