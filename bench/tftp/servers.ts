/**
 * The two TFTP servers of the benchmark, each a child process started on a private port (in the
 * server's namespace on the veth link) and stopped by its PID: bin/bty-tftp, ours, and Debian's
 * tftpd-hpa (`in.tftpd -L`, foreground, serving the same folder, chrooted to it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { open, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { grantedOptions, type FetchTarget } from './client.ts';

const REPO = resolve(import.meta.dirname, '../..');
export const BTY_TFTP = join(REPO, 'bin', 'bty-tftp');
export const IN_TFTPD = '/usr/sbin/in.tftpd';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

/** `bty-tftp` is ours; `tftpd-hpa` as "ours" only checks the harness itself (--ours tftpd-hpa). */
export type ServerKind = 'bty-tftp' | 'tftpd-hpa';

export interface RunningServer {
  kind: ServerKind;
  pid: number;
  port: number;
  log: string;
  stop(): Promise<void>;
}

/** A UDP port free on 127.0.0.1 right now (the kernel's pick for port 0). */
export function freeUdpPort(): Promise<number> {
  return new Promise((done, fail) => {
    const socket = createSocket('udp4');
    socket.once('error', fail);
    socket.bind(0, '127.0.0.1', () => {
      const port = socket.address().port;
      socket.close(() => done(port));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => child.once('exit', () => done()));
}

async function stopChild(child: ChildProcess): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) return;
  const gone = exited(child);
  try {
    process.kill(pid, 'SIGTERM');
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

export interface ServerOptions {
  kind: ServerKind;
  /** The folder served (read-only). */
  root: string;
  address: string;
  port: number;
  /** Command prefix of the server's side (`nsenter --net=…`), empty on loopback. */
  prefix: string[];
  /** Where its output goes. */
  log: string;
  /** A fetch through the client's side that proves the server answers. */
  probe: { target: Omit<FetchTarget, 'port'>; local: string };
}

function commandOf(o: ServerOptions): string[] {
  if (o.kind === 'bty-tftp') {
    return [BTY_TFTP, '--root', o.root, '--port', String(o.port), '--address', o.address];
  }
  // -L: listen in the foreground (the PID is the server's); -s: chroot to the folder. As root it
  // drops to `nobody` per transfer, so the folder and file must be world-readable.
  return [IN_TFTPD, '-L', '-s', '-a', `${o.address}:${o.port}`, o.root];
}

/** Starts the server and waits until a real fetch through it succeeds. */
export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const [file, ...args] = [...o.prefix, ...commandOf(o)];
  if (file === undefined) throw new Error('empty command');
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('BTY_')) env[key] = value;
  }
  const out = await open(o.log, 'a');
  let child: ChildProcess;
  try {
    child = spawn(file, args, { env, stdio: ['ignore', out.fd, out.fd] });
    await new Promise<void>((done, fail) => {
      child.once('spawn', done);
      child.once('error', fail);
    });
  } finally {
    await out.close();
  }
  const stop = () => stopChild(child);
  let gone = false;
  void exited(child).then(() => (gone = true));
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    if (gone) throw new Error(`${o.kind} exited during start-up:\n${await tail(o.log)}`);
    const probe = await grantedOptions(
      { ...o.probe.target, port: o.port },
      { blksize: null, windowsize: null },
      o.probe.local,
      3000,
    );
    if (probe.ok) return { kind: o.kind, pid: child.pid ?? 0, port: o.port, log: o.log, stop };
    last = probe.error ?? '';
    await new Promise((done) => setTimeout(done, 100));
  }
  await stop();
  throw new Error(
    `${o.kind} did not serve a file within ${START_TIMEOUT_MS / 1000} s (last: ${last}):\n` +
      (await tail(o.log)),
  );
}
