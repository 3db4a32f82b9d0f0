/**
 * The two contenders of the cache benchmark, each a child process on 127.0.0.1 and a free port,
 * stopped by its PID:
 *
 * - nginx (Debian's), configured as Debian ships it for static files (`worker_processes auto`,
 *   `sendfile on`, `tcp_nopush on`), access log off, serving the benchmark's work folder under
 *   `/files/`. It is also the origin bty-web fills its cache from.
 * - bty-web (bench/pxe/servers.ts starts it the same way as for the PXE benchmark), with the
 *   image added to its catalog and downloaded into its artifact cache through the operator API,
 *   then served from `/b/<token>/<name>`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blobPath } from '../../src/cache/url.ts';
import { freePort, type RunningServer } from '../pxe/servers.ts';

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
/** bty-web's default operator password (`[admin] password`): the benchmark's server uses it. */
export const DEFAULT_PASSWORD = 'bty-lab';

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => child.once('exit', () => done()));
}

/** `signal`, then SIGKILL if the process has not exited in time; resolves once it has. */
async function stopByPid(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) return;
  const gone = exited(child);
  try {
    process.kill(pid, signal);
  } catch {
    return; // already gone
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>(
    (done) => (timer = setTimeout(() => done('late'), STOP_TIMEOUT_MS)),
  );
  const outcome = await Promise.race([gone.then(() => 'exited' as const), late]);
  clearTimeout(timer);
  if (outcome === 'late') {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
    await gone;
  }
}

export interface NginxFiles extends RunningServer {
  /** The URL of a file of the served folder. */
  fileUrl(name: string): string;
}

/**
 * Starts nginx serving the files of `root` at `/files/<name>`, from a configuration folder of its
 * own under the temporary directory (removed when it stops unless `keep`).
 */
export async function startNginxFiles(options: {
  root: string;
  keep?: boolean;
}): Promise<NginxFiles> {
  const dir = await mkdtemp(join(tmpdir(), 'bty-bench-cache-nginx-'));
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  const temp = (name: string) => `  ${name}_temp_path ${join(dir, `${name}-temp`)};`;
  const root = options.root.replace(/\/+$/, '');
  await writeFile(
    conf,
    [
      // Started as root, nginx's workers would run as `nobody`, who may not reach a work folder
      // made by mkdtemp (mode 0700): they keep the caller's user instead.
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      'worker_processes auto;',
      'daemon off;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  access_log off;',
      '  sendfile on;',
      '  tcp_nopush on;',
      '  default_type application/octet-stream;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(temp),
      '  server {',
      `    listen 127.0.0.1:${port};`,
      `    location /files/ { alias ${root}/; }`,
      '    location = /healthz { return 200 "ok\\n"; }',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const log = join(dir, 'nginx.out');
  const out = await open(log, 'a');
  let child: ChildProcess;
  try {
    child = spawn('nginx', ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], {
      stdio: ['ignore', out.fd, out.fd],
    });
    await new Promise<void>((done, fail) => {
      child.once('spawn', done);
      child.once('error', (err) =>
        fail(
          (err as NodeJS.ErrnoException).code === 'ENOENT'
            ? new Error(
                'nginx is not installed (Debian package nginx; make bench-cache installs it)',
              )
            : err,
        ),
      );
    });
  } finally {
    await out.close();
  }
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    // SIGQUIT: the master lets its workers finish and exits (daemon off: the PID is the master's).
    await stopByPid(child, 'SIGQUIT');
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitReady(child, `${url}/healthz`, log);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    pid: child.pid ?? 0,
    url,
    log,
    stop,
    fileUrl: (name) => `${url}/files/${encodeURIComponent(name)}`,
  };
}

async function waitReady(child: ChildProcess, url: string, log: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let gone = false;
  void exited(child).then(() => (gone = true));
  while (Date.now() < deadline) {
    if (gone) throw new Error(`nginx exited during start-up:\n${await tail(log)}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((done) => setTimeout(done, 50));
  }
  throw new Error(`nginx did not answer ${url} within ${START_TIMEOUT_MS / 1000} s`);
}

async function tail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-8).join('\n');
}

// ---------------------------------------------------------------------------------------------
// bty-web's operator API: catalog entry, cache download, serve path
// ---------------------------------------------------------------------------------------------

/** An operator session on a running bty-web: the cookies `POST /ui/login` set. */
export interface Operator {
  base: string;
  cookie: string;
}

async function answer(res: Response, what: string): Promise<unknown> {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return text === '' ? null : (JSON.parse(text) as unknown);
}

export async function login(base: string, password = DEFAULT_PASSWORD): Promise<Operator> {
  const res = await fetch(`${base}/ui/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ password }),
    redirect: 'manual',
  });
  await answer(res, 'POST /ui/login');
  const cookie = res.headers
    .getSetCookie()
    .map((line) => line.split(';')[0] ?? '')
    .filter((pair) => pair !== '')
    .join('; ');
  if (!cookie.includes('bty-token=')) throw new Error('POST /ui/login set no bty-token cookie');
  return { base, cookie };
}

async function call(op: Operator, method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${op.base}${path}`, {
    method,
    headers: {
      cookie: op.cookie,
      accept: 'application/json',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    redirect: 'manual',
  });
  return answer(res, `${method} ${path}`);
}

export interface CatalogImage {
  name: string;
  src: string;
  sha256: string;
  sizeBytes: number;
}

/** Adds the image to the catalog; returns its ref. */
export async function addCatalogEntry(op: Operator, image: CatalogImage): Promise<string> {
  const entry = (await call(op, 'POST', '/catalog/entries', {
    name: image.name,
    src: image.src,
    sha256: image.sha256,
    size_bytes: image.sizeBytes,
    format: 'img',
  })) as { ref?: unknown };
  if (typeof entry?.ref !== 'string') throw new Error('POST /catalog/entries returned no ref');
  return entry.ref;
}

interface CacheListing {
  mode?: string;
  entries?: Array<{
    ref?: string;
    origin?: string;
    digest?: string;
    size?: number;
    serve_path?: string;
  }>;
  downloads?: Array<{
    ref?: string;
    status?: string;
    bytes_done?: number;
    bytes_total?: number;
    error?: string | null;
  }>;
}

export interface CachedImage {
  /** The path bty-web serves the entry at, `/b/<token>/<name>`. */
  servePath: string;
  /** The digest the cache recorded (`sha256:<hex>`, or the bare hex). */
  digest: string;
  size: number;
  mode: string;
  fillSeconds: number;
}

/**
 * Asks bty-web to download the entry into its cache (`POST /cache/downloads`) and polls
 * `GET /cache` until the entry is there, the download failed, or `timeoutMs` passed.
 */
export async function fillCache(
  op: Operator,
  ref: string,
  origin: string,
  timeoutMs: number,
): Promise<CachedImage> {
  const started = Date.now();
  await call(op, 'POST', '/cache/downloads', { ref });
  const expected = blobPath(origin);
  for (;;) {
    const listing = (await call(op, 'GET', '/cache')) as CacheListing;
    const entry = listing.entries?.find((e) => e.ref === ref || e.origin === origin);
    const download = listing.downloads?.find((d) => d.ref === ref);
    if (entry && (download === undefined || download.status === 'completed')) {
      const servePath = entry.serve_path ?? expected;
      if (servePath !== expected) {
        throw new Error(`GET /cache gives serve_path ${servePath}; expected ${expected} (§14.3)`);
      }
      return {
        servePath,
        digest: entry.digest ?? '',
        size: entry.size ?? 0,
        mode: listing.mode ?? 'unknown',
        fillSeconds: (Date.now() - started) / 1000,
      };
    }
    if (download && ['failed', 'cancelled', 'canceled', 'error'].includes(download.status ?? '')) {
      throw new Error(
        `the cache download of ${origin} ${download.status}: ${download.error ?? ''}`,
      );
    }
    if (Date.now() - started > timeoutMs) {
      const progress = download
        ? `${download.bytes_done ?? 0}/${download.bytes_total ?? '?'} bytes`
        : 'no download listed';
      throw new Error(
        `the cache download of ${origin} did not finish within ${timeoutMs / 1000} s (${progress})`,
      );
    }
    await new Promise((done) => setTimeout(done, 200));
  }
}

// ---------------------------------------------------------------------------------------------
// CPU time of a server's process tree
// ---------------------------------------------------------------------------------------------

const TICKS_PER_SECOND = 100;

/** [ppid, utime + stime in ticks] of a /proc/<pid>/stat line. */
function parseStat(text: string): [number, number] | null {
  // The command name, in parentheses, may hold spaces: the fields start after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ppid = Number(fields[1]);
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ppid) && Number.isFinite(ticks) ? [ppid, ticks] : null;
}

/** User + system CPU seconds used so far by `pid` and its descendants (nginx's workers). */
export async function treeCpuSeconds(pid: number): Promise<number> {
  const parents = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const text = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => null);
    const parsed = text === null ? null : parseStat(text);
    if (!parsed) continue;
    parents.set(Number(name), parsed[0]);
    ticks.set(Number(name), parsed[1]);
  }
  const inTree = (p: number): boolean => {
    for (let at: number | undefined = p, hops = 0; at !== undefined && hops < 64; hops++) {
      if (at === pid) return true;
      if (at <= 1) return false;
      at = parents.get(at);
    }
    return false;
  };
  let total = 0;
  for (const [p, t] of ticks) if (inTree(p)) total += t;
  return total / TICKS_PER_SECOND;
}

/** A folder for bty-web's state (database and cache) inside `work`, on the image's disk. */
export async function stateFolder(work: string): Promise<string> {
  const dir = join(work, `state-${process.pid}-${Date.now()}`);
  await mkdir(dir, { recursive: true });
  return dir;
}
