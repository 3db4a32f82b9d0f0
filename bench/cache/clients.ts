/**
 * The clients of the cache benchmark: N curl processes started at once, each downloading the
 * whole file to /dev/null, each under /usr/bin/time for its CPU time. curl was the fastest client
 * measured on this kind of machine (about 0.3 CPU seconds per GiB, nearly all of it the kernel
 * copying bytes out of the socket); wrk, which parses every body byte, reached 30-70 % of
 * curl's throughput against the same nginx in the same minutes. The same client runs against
 * both servers.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request } from 'node:http';

const CURL_FORMAT = 'bench-cache %{http_code} %{size_download} %{time_total}\\n';
const TIME_FORMAT = 'bench-cache-cpu %U %S';

export interface Download {
  status: number;
  bytes: number;
  seconds: number;
  /** User + system CPU seconds of the curl process. */
  cpuSeconds: number;
  /** curl's own complaint, when it failed. */
  error: string | null;
}

export interface Round {
  /** From starting the first client to the last one finishing. */
  wallSeconds: number;
  downloads: Download[];
}

function runCurl(url: string, limitSeconds: number): Promise<Download> {
  return new Promise((done, fail) => {
    const child = spawn(
      '/usr/bin/time',
      [
        ...['-f', TIME_FORMAT],
        'curl',
        ...['--silent', '--show-error', '--output', '/dev/null'],
        ...['--max-time', String(limitSeconds), '--write-out', CURL_FORMAT],
        url,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    child.once('error', fail);
    child.once('close', (code) => {
      const got = /bench-cache (\d+) (\d+) ([\d.]+)/.exec(stdout);
      const cpu = /bench-cache-cpu ([\d.]+) ([\d.]+)/.exec(stderr);
      const complaint = stderr
        .split('\n')
        .filter((line) => line.trim() !== '' && !line.startsWith('bench-cache-cpu'))
        .join('; ');
      done({
        status: Number(got?.[1] ?? 0),
        bytes: Number(got?.[2] ?? 0),
        seconds: Number(got?.[3] ?? 0),
        cpuSeconds: cpu ? Number(cpu[1]) + Number(cpu[2]) : 0,
        error: code === 0 ? null : complaint || `curl exited with status ${code}`,
      });
    });
  });
}

/** `clients` concurrent downloads of `url`, each bounded by `limitSeconds`. */
export async function downloadRound(
  url: string,
  clients: number,
  limitSeconds: number,
): Promise<Round> {
  const t0 = process.hrtime.bigint();
  const downloads = await Promise.all(
    Array.from({ length: clients }, () => runCurl(url, limitSeconds)),
  );
  const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { wallSeconds, downloads };
}

export interface CheckedDownload {
  status: number;
  contentLength: number | null;
  bytes: number;
  sha256: string;
}

/** One download of `url`, hashed as it arrives (also reads the file into the page cache). */
export function hashDownload(url: string, limitSeconds: number): Promise<CheckedDownload> {
  return new Promise((done, fail) => {
    const req = request(url, { timeout: limitSeconds * 1000 }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        hash.update(chunk);
      });
      res.once('error', fail);
      res.once('end', () => {
        const length = res.headers['content-length'];
        done({
          status: res.statusCode ?? 0,
          contentLength: length === undefined ? null : Number(length),
          bytes,
          sha256: hash.digest('hex'),
        });
      });
    });
    req.once('timeout', () => req.destroy(new Error(`no answer from ${url} in ${limitSeconds} s`)));
    req.once('error', fail);
    req.end();
  });
}
