/**
 * The servers of the PXE benchmark, each a child process on 127.0.0.1 and a free port, stopped
 * by its PID: bty-web (bin/bty-web on a temporary state folder) and nginx (a configuration in a
 * temporary folder, serving one static iPXE script for every `/pxe/...` path: the ceiling).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '../..');
export const BTY_WEB = join(REPO, 'bin', 'bty-web');
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

export interface RunningServer {
  pid: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** Where the server's stdout and stderr go. */
  log: string;
  /** SIGTERM, then SIGKILL if it has not exited in time; resolves once it has exited. */
  stop(): Promise<void>;
}

/** A port nothing listens on right now (the kernel's pick for port 0). */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => child.once('exit', () => done()));
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) return;
  const gone = exited(child);
  try {
    process.kill(pid, signal);
  } catch {
    return; // already gone
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((done) => {
    timer = setTimeout(() => done('late'), STOP_TIMEOUT_MS);
  });
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

async function tail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-8).join('\n');
}

/** Polls `url` until it answers 200; fails early if the process exits. */
async function waitReady(child: ChildProcess, url: string, name: string, log: string) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let gone = false;
  void exited(child).then(() => (gone = true));
  while (Date.now() < deadline) {
    if (gone) throw new Error(`${name} exited during start-up:\n${await tail(log)}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((done) => setTimeout(done, 50));
  }
  await stopChild(child, 'SIGKILL');
  throw new Error(
    `${name} did not answer ${url} within ${START_TIMEOUT_MS / 1000} s:\n${await tail(log)}`,
  );
}

async function spawnLogged(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  log: string,
): Promise<ChildProcess> {
  const out = await open(log, 'a');
  try {
    const child = spawn(command, args, { env, stdio: ['ignore', out.fd, out.fd] });
    await new Promise<void>((done, fail) => {
      child.once('spawn', done);
      child.once('error', fail);
    });
    return child;
  } finally {
    await out.close();
  }
}

export interface BtyWebOptions {
  /** Its state folder (BTY_PATHS_STATE_DIR); the SQLite file is `state.db` in it. */
  stateDir: string;
  /** Extra Node flags (e.g. `--cpu-prof --cpu-prof-dir=DIR`), added to bin/bty-web's own. */
  nodeFlags?: string[];
}

/**
 * Starts bin/bty-web on 127.0.0.1 and a free port, isolated from the machine's configuration:
 * an empty `--config` file replaces the bty.toml search list and no `BTY_*` variable of the
 * caller's environment is passed on.
 */
export async function startBtyWeb(options: BtyWebOptions): Promise<RunningServer> {
  await mkdir(options.stateDir, { recursive: true });
  const config = join(options.stateDir, 'bench-empty.toml');
  await writeFile(config, '# bench/pxe: embedded defaults only\n');
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('BTY_')) env[key] = value;
  }
  env.BTY_PATHS_STATE_DIR = options.stateDir;
  env.BTY_WEB_NODE_FLAGS = ['--max-old-space-size=512', ...(options.nodeFlags ?? [])].join(' ');
  const port = await freePort();
  const log = join(options.stateDir, 'bty-web.log');
  const args = ['--config', config, '--host', '127.0.0.1', '--port', String(port)];
  const child = await spawnLogged(BTY_WEB, args, env, log);
  const url = `http://127.0.0.1:${port}`;
  await waitReady(child, `${url}/healthz`, 'bty-web', log);
  return { pid: child.pid ?? 0, url, log, stop: () => stopChild(child, 'SIGTERM') };
}

export interface NginxOptions {
  /** The script served for every `/pxe/<anything>`. */
  script: string;
  /** Leave its folder (configuration, logs) behind when it stops. */
  keep?: boolean;
}

/**
 * Starts nginx (one worker, access log off) serving `script` at every `/pxe/...` path, from a
 * folder of its own under the temporary directory, removed when it stops.
 */
export async function startNginx(options: NginxOptions): Promise<RunningServer> {
  const dir = await mkdtemp(join(tmpdir(), 'bty-bench-nginx-'));
  // When started as root, nginx's worker runs as `nobody`: it must be able to reach the files.
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'www'), { mode: 0o755 });
  await writeFile(join(dir, 'www', 'script.ipxe'), options.script, { mode: 0o644 });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  const temp = (name: string) => `${name}_temp_path ${join(dir, `${name}-temp`)};`;
  await writeFile(
    conf,
    [
      'worker_processes 1;',
      'daemon off;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  access_log off;',
      '  keepalive_requests 1000000;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((n) => `  ${temp(n)}`),
      '  server {',
      `    listen 127.0.0.1:${port};`,
      `    root ${join(dir, 'www')};`,
      '    default_type text/plain;',
      '    charset utf-8;',
      '    location /pxe/ { try_files /script.ipxe =404; }',
      '    location = /healthz { try_files /script.ipxe =404; }',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const log = join(dir, 'nginx.out');
  const child = await spawnLogged(
    'nginx',
    ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')],
    process.env,
    log,
  );
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    // SIGQUIT: the master lets its worker finish and exits (daemon off: the PID is the master's).
    await stopChild(child, 'SIGQUIT');
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitReady(child, `${url}/healthz`, 'nginx', log);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid ?? 0, url, log, stop };
}
