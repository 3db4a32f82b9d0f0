/**
 * A real, private PostgreSQL server for tests: `initdb` into a fresh temp folder, then `postgres`
 * run as a child process (no pg_ctl, so the helper holds the postmaster's PID) on 127.0.0.1 and a
 * random free port, with its Unix socket inside the temp folder. Durability is switched off
 * (`fsync`, `synchronous_commit`, `full_page_writes`): the data is thrown away at `stop()`.
 *
 * PostgreSQL refuses to run as root. When the tests run as root, `initdb` and `postgres` run as
 * the `postgres` user (made by Debian's postgresql package), which then owns the temp folder;
 * otherwise they run as the current user.
 *
 * Clients connect over TCP with a generated password (scram-sha-256) as the role `bty`, which owns
 * the database `bty` and every database made by `createDatabase`. The helper itself administers
 * the server as the bootstrap superuser over the private Unix socket (trust; the socket's folder
 * is readable by the server's user only, and root).
 *
 * Always `stop()` in afterAll. As a safety net, servers still running when the process exits get
 * an immediate shutdown (SIGQUIT); their temp folders stay behind then.
 *
 * The packaged cluster (Debian's `15/main` on port 5432, under systemd) is neither used nor
 * touched: nothing here reads /etc/postgresql or /var/run/postgresql.
 *
 * Usage:
 *   const pg = await startPostgres();
 *   const url = await pg.createDatabase('machines_test'); // a clean database for one test file
 *   await psql(url, 'CREATE TABLE t (id int)');
 *   await pg.stop();
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chown, constants, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { freeTcpPort } from './ports.ts';

const run = promisify(execFile);

/** Where Debian installs each PostgreSQL major version's programs: `<root>/<version>/bin`. */
const DEBIAN_PG_ROOT = '/usr/lib/postgresql';

/** The OS user that runs the server when the tests run as root. */
const SERVER_USER_WHEN_ROOT = 'postgres';

/** The client role and its first database. */
const APP_ROLE = 'bty';
const APP_DATABASE = 'bty';
/** The bootstrap superuser, used by the helper over the Unix socket only. */
const ADMIN_ROLE = 'bty_admin';

const LOG_TAIL_BYTES = 64 * 1024;
const PORT_ATTEMPTS = 5;

export interface PostgresOptions {
  /** How long to wait for the server to accept connections, default 15 s. */
  startTimeoutMs?: number;
}

export interface PgServer {
  /** `postgres://bty:<password>@127.0.0.1:<port>/bty`. */
  url: string;
  port: number;
  /** The postmaster's PID. */
  pid: number;
  /** The temp folder holding the data directory and the Unix socket (removed by `stop`). */
  dir: string;
  /** The data directory (the `-D` argument, so `pgrep -f` on it finds the postmaster). */
  dataDir: string;
  /**
   * The server's `cluster_name`, unique per server. It is in every server process's title
   * (`postgres: <clusterName>: checkpointer`), so `pgrep -f` on it finds all of them.
   */
  clusterName: string;
  /**
   * Creates a database owned by the client role and returns its URL (same credentials as `url`).
   * `name`: lower-case letters, digits and `_`, starting with a letter or `_`, at most 63.
   */
  createDatabase(name: string): Promise<string>;
  /** The last part of the server's log (its stdout and stderr), for diagnosing a failure. */
  logs(): string;
  /**
   * Fast shutdown (SIGINT to the postmaster: clients are disconnected), SIGKILL if it has not
   * exited after 10 s; then removes the temp folder. Idempotent.
   */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Finding the programs

export interface PgPrograms {
  binDir: string;
  initdb: string;
  postgres: string;
  pgIsready: string;
}

let programs: Promise<PgPrograms> | null = null;

/**
 * The PostgreSQL server programs: from `pg_config --bindir` when it names a folder holding
 * `initdb` and `postgres` (libpq-dev's own pg_config names /usr/bin, which does not), else from
 * the highest version under /usr/lib/postgresql.
 */
export function findPostgres(): Promise<PgPrograms> {
  programs ??= locate();
  // A failed look-up is not remembered, so installing the package fixes the next call.
  programs.catch(() => {
    programs = null;
  });
  return programs;
}

async function locate(): Promise<PgPrograms> {
  const candidates: string[] = [];
  try {
    const { stdout } = await run('pg_config', ['--bindir'], { env: cleanEnv() });
    if (stdout.trim() !== '') candidates.push(stdout.trim());
  } catch {
    // No pg_config: look at Debian's layout.
  }
  try {
    const versions = (await readdir(DEBIAN_PG_ROOT))
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) candidates.push(join(DEBIAN_PG_ROOT, v, 'bin'));
  } catch {
    // No /usr/lib/postgresql.
  }
  for (const binDir of candidates) {
    const initdb = join(binDir, 'initdb');
    const postgres = join(binDir, 'postgres');
    if ((await isExecutable(initdb)) && (await isExecutable(postgres))) {
      const pgIsready = join(binDir, 'pg_isready');
      return {
        binDir,
        initdb,
        postgres,
        pgIsready: (await isExecutable(pgIsready)) ? pgIsready : 'pg_isready',
      };
    }
  }
  throw new Error(
    'PostgreSQL server programs (initdb, postgres) not found via pg_config --bindir or under ' +
      `${DEBIAN_PG_ROOT}/*/bin: install Debian's postgresql package ` +
      '(make deps-test, or apt-get install postgresql)',
  );
}

/** `psql` from the server's bin folder when it is there, else the one on PATH. */
async function psqlProgram(): Promise<string> {
  try {
    const { binDir } = await findPostgres();
    const candidate = join(binDir, 'psql');
    if (await isExecutable(candidate)) return candidate;
  } catch {
    // No server programs: a client alone may still be installed.
  }
  return 'psql';
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The environment without PG* variables (PGHOST, PGDATA, PGOPTIONS… would override ours). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('PG')),
  );
  // English messages (the helper recognises "Address already in use"), no locale surprises.
  return { ...env, LC_ALL: 'C', LANG: 'C' };
}

// ---------------------------------------------------------------------------------------------
// psql

export interface PsqlOptions {
  /** Extra psql arguments, e.g. `['-v', 'name=value']`. */
  args?: string[];
  /** Default 30 s. */
  timeoutMs?: number;
}

/**
 * Runs SQL through `psql` against a `postgres://` URL (or a libpq connection string) and returns
 * stdout: unaligned, tuples only, fields separated by `|`, one row a line. Stops at the first
 * error, never prompts for a password, ignores ~/.psqlrc. A failure's message carries psql's
 * stderr.
 */
export async function psql(conn: string, sql: string, options: PsqlOptions = {}): Promise<string> {
  const program = await psqlProgram();
  const args = ['-X', '-w', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', ...(options.args ?? [])];
  args.push('-d', conn, '-c', sql);
  return runPsql(program, args, options.timeoutMs ?? 30_000);
}

async function runPsql(program: string, args: string[], timeoutMs: number): Promise<string> {
  try {
    const { stdout } = await run(program, args, { env: cleanEnv(), timeout: timeoutMs });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string; killed?: boolean };
    if (e.code === 'ENOENT') {
      throw new Error(
        "psql not found: install Debian's postgresql-client package " +
          '(make deps-test, or apt-get install postgresql)',
        { cause: err },
      );
    }
    const why = e.killed ? `timed out after ${timeoutMs} ms` : (e.stderr ?? '').trim() || e.message;
    throw new Error(`psql failed: ${why}`, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------
// The server

/** Servers still running in this process: stopped (immediate shutdown) if the process exits. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) {
      // SIGQUIT: immediate shutdown; the postmaster takes its children down with it.
      try {
        if (child.pid !== undefined) process.kill(child.pid, 'SIGQUIT');
      } catch {
        // Already gone.
      }
    }
  });
}

export async function startPostgres(options: PostgresOptions = {}): Promise<PgServer> {
  const startTimeoutMs = options.startTimeoutMs ?? 15_000;
  const pg = await findPostgres();
  const owner = await serverUser();
  const dir = await mkdtemp(join(tmpdir(), 'bty-pg-'));
  const dataDir = join(dir, 'data');
  const clusterName = basename(dir);
  const password = randomBytes(18).toString('hex');
  let child: ChildProcess | null = null;
  let log = '';
  let stopping: Promise<void> | null = null;

  const stop = () => {
    stopping ??= (async () => {
      if (child) await stopProcess(child);
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    })();
    return stopping;
  };

  try {
    // mkdtemp makes the folder 0700; the server's user must own it (initdb makes data/ in it,
    // the server puts its socket there). Root keeps access without being the owner.
    if (owner) await chown(dir, owner.uid, owner.gid);
    const spawnAs = { cwd: dir, env: cleanEnv(), ...(owner ?? {}) };

    await initdb(pg.initdb, dataDir, spawnAs);

    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freeTcpPort();
      log = '';
      const proc = spawn(
        pg.postgres,
        [
          '-D',
          dataDir,
          '-c',
          `port=${port}`,
          '-c',
          'listen_addresses=127.0.0.1',
          '-c',
          `unix_socket_directories=${dir}`,
          '-c',
          `cluster_name=${clusterName}`,
          '-c',
          'fsync=off',
          '-c',
          'synchronous_commit=off',
          '-c',
          'full_page_writes=off',
          '-c',
          'lc_messages=C',
        ],
        { ...spawnAs, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      child = proc;
      live.add(proc);
      installExitHook();
      proc.once('exit', () => live.delete(proc));
      const append = (chunk: Buffer) => {
        log += chunk.toString('utf8');
        if (log.length > 2 * LOG_TAIL_BYTES) log = log.slice(-LOG_TAIL_BYTES);
      };
      proc.stdout?.on('data', append);
      proc.stderr?.on('data', append);
      proc.on('error', (err) => append(Buffer.from(`\n[helper] ${String(err)}\n`)));

      const outcome = await waitReady(proc, pg.pgIsready, port, () => log, startTimeoutMs);
      if (outcome === 'ready') break;
      // The port was taken between picking and binding: pick another one.
      child = null;
      if (attempt >= PORT_ATTEMPTS) {
        throw new Error(
          `postgres could not bind a free port in ${PORT_ATTEMPTS} attempts; last log:\n${log}`,
        );
      }
    }

    const admin = `host=${connValue(dir)} port=${port} user=${ADMIN_ROLE} dbname=postgres`;
    await psqlCommands(admin, [
      `CREATE ROLE ${APP_ROLE} LOGIN CREATEDB PASSWORD '${password}'`,
      `CREATE DATABASE ${APP_DATABASE} OWNER ${APP_ROLE}`,
    ]);

    const urlFor = (db: string) => `postgres://${APP_ROLE}:${password}@127.0.0.1:${port}/${db}`;
    const pid = child.pid;
    if (pid === undefined) throw new Error('postgres: no PID');
    return {
      url: urlFor(APP_DATABASE),
      port,
      pid,
      dir,
      dataDir,
      clusterName,
      async createDatabase(name: string) {
        if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) {
          throw new Error(
            `createDatabase: ${JSON.stringify(name)} is not a plain lower-case identifier`,
          );
        }
        if (stopping) throw new Error('createDatabase: the server is stopped');
        // Quoted so that a keyword (say `user`) is a name too; the check above keeps it plain.
        await psqlCommands(admin, [`CREATE DATABASE "${name}" OWNER ${APP_ROLE}`]);
        return urlFor(name);
      },
      logs: () => log.slice(-LOG_TAIL_BYTES),
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined); // the startup error is the one worth reporting
    throw err;
  }
}

/** A value for a libpq `key=value` connection string, quoted. */
function connValue(value: string): string {
  return `'${value.replace(/[\\']/g, '\\$&')}'`;
}

/** Each statement as its own `-c` (CREATE DATABASE may not run inside a transaction block). */
async function psqlCommands(conn: string, statements: string[]): Promise<void> {
  const args = ['-X', '-w', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conn];
  for (const s of statements) args.push('-c', s);
  await runPsql(await psqlProgram(), args, 30_000);
}

/** The `postgres` user's IDs when running as root; null (run as ourselves) otherwise. */
async function serverUser(): Promise<{ uid: number; gid: number } | null> {
  if (process.getuid?.() !== 0) return null;
  try {
    const [uid, gid] = await Promise.all([
      run('id', ['-u', SERVER_USER_WHEN_ROOT]),
      run('id', ['-g', SERVER_USER_WHEN_ROOT]),
    ]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch (err) {
    throw new Error(
      `running as root, and PostgreSQL refuses to: the user ${SERVER_USER_WHEN_ROOT} to run it ` +
        "as does not exist (Debian's postgresql package makes it: make deps-test, or " +
        'apt-get install postgresql)',
      { cause: err },
    );
  }
}

async function initdb(
  program: string,
  dataDir: string,
  spawnAs: { cwd: string; env: NodeJS.ProcessEnv; uid?: number; gid?: number },
): Promise<void> {
  try {
    await run(
      program,
      [
        '-D',
        dataDir,
        '-U',
        ADMIN_ROLE,
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
        '--no-sync',
        '--no-instructions',
      ],
      { ...spawnAs, timeout: 60_000 },
    );
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() || e.message;
    const hint = /permission denied/i.test(out)
      ? `\n(the server's user must be able to reach ${dataDir}: is TMPDIR readable by it?)`
      : '';
    throw new Error(`initdb failed:\n${out}${hint}`, { cause: err });
  }
}

/**
 * Polls `pg_isready` on 127.0.0.1 until the server accepts connections. 'port-taken' when the
 * server exited because its port was in use; any other exit, or the deadline, is an error
 * carrying the server's log.
 */
async function waitReady(
  proc: ChildProcess,
  pgIsready: string,
  port: number,
  log: () => string,
  timeoutMs: number,
): Promise<'ready' | 'port-taken'> {
  // Set by the listeners below (the casts stop TypeScript narrowing them to null for good).
  let exited = null as { code: number | null; signal: string | null } | null;
  let spawnError = null as Error | null;
  const onExit = (code: number | null, signal: string | null) => (exited = { code, signal });
  const onError = (err: Error) => (spawnError = err);
  proc.on('exit', onExit);
  proc.on('error', onError);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (spawnError) throw new Error(`could not start postgres: ${String(spawnError)}`);
      if (exited) {
        if (/could not bind .*Address already in use/.test(log())) return 'port-taken';
        throw new Error(
          `postgres exited during startup (code ${exited.code}, signal ${exited.signal}):\n${log()}`,
        );
      }
      try {
        await run(pgIsready, ['-q', '-h', '127.0.0.1', '-p', String(port), '-t', '1'], {
          env: cleanEnv(),
          timeout: 5_000,
        });
        // pg_isready said yes, but only a live postmaster counts (not someone else on the port).
        if (!exited) return 'ready';
      } catch {
        // 1: starting up; 2: no answer yet.
      }
      if (Date.now() > deadline) {
        throw new Error(`postgres did not accept connections in ${timeoutMs} ms:\n${log()}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    proc.off('exit', onExit);
    proc.off('error', onError);
  }
}

/** SIGINT (fast shutdown), SIGKILL after 10 s, and wait for the exit (bounded). */
async function stopProcess(proc: ChildProcess): Promise<void> {
  const running = () => proc.exitCode === null && proc.signalCode === null;
  if (proc.pid === undefined || !running()) return;
  const pid = proc.pid;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const within = async (ms: number) => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((r) => (timer = setTimeout(r, ms, false)));
    try {
      return await Promise.race([exited.then(() => true), late]);
    } finally {
      clearTimeout(timer);
    }
  };
  process.kill(pid, 'SIGINT');
  if (await within(10_000)) return;
  if (running()) process.kill(pid, 'SIGKILL');
  if (!(await within(5_000))) {
    throw new Error(`postgres (PID ${pid}) did not exit after SIGKILL`);
  }
}
