import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgres, psql, startPostgres, type PgServer } from './postgres.ts';

const run = promisify(execFile);

/** PIDs of processes whose command line contains `text` (pgrep -f, as a fixed string). */
async function pgrep(text: string): Promise<string[]> {
  const pattern = text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  try {
    const { stdout } = await run('pgrep', ['-f', pattern]);
    return stdout.trim().split('\n').filter(Boolean);
  } catch (err) {
    if ((err as { code?: number }).code === 1) return []; // nothing matched
    throw err;
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The real user ID of a process, from /proc. */
async function uidOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^Uid:\s+(\d+)/m.exec(status);
  return Number(match?.[1]);
}

describe('findPostgres', () => {
  it('finds initdb and postgres in one bin folder', async () => {
    const pg = await findPostgres();
    expect(pg.initdb).toBe(join(pg.binDir, 'initdb'));
    expect(pg.postgres).toBe(join(pg.binDir, 'postgres'));
    const { stdout } = await run(pg.postgres, ['--version']);
    expect(stdout).toMatch(/^postgres \(PostgreSQL\) \d+/);
  });
});

describe('startPostgres', () => {
  let pg: PgServer;
  let startMs = 0;

  beforeAll(async () => {
    const t0 = performance.now();
    pg = await startPostgres();
    startMs = performance.now() - t0;
  });

  afterAll(async () => {
    await pg?.stop();
  });

  it('starts quickly on 127.0.0.1 with a password URL', async () => {
    console.log(`startPostgres took ${Math.round(startMs)} ms`);
    expect(startMs).toBeLessThan(15_000);
    expect(pg.url).toMatch(
      new RegExp(`^postgres://bty:[0-9a-f]{36}@127\\.0\\.0\\.1:${pg.port}/bty$`),
    );
    expect(pg.port).toBeGreaterThan(0);
    expect(await psql(pg.url, 'SELECT current_user, current_database()')).toBe('bty|bty\n');
  });

  it('runs the server as a non-root user, listening on 127.0.0.1 only, durability off', async () => {
    const uid = await uidOf(pg.pid);
    expect(uid).not.toBe(0);
    if (process.getuid?.() !== 0) expect(uid).toBe(process.getuid?.());
    const settings = await psql(
      pg.url,
      "SELECT name || '=' || setting FROM pg_settings WHERE name IN " +
        "('fsync', 'synchronous_commit', 'full_page_writes', 'listen_addresses', 'port', " +
        "'cluster_name') ORDER BY name",
    );
    expect(settings.trim().split('\n')).toEqual([
      `cluster_name=${pg.clusterName}`,
      'fsync=off',
      'full_page_writes=off',
      'listen_addresses=127.0.0.1',
      `port=${pg.port}`,
      'synchronous_commit=off',
    ]);
    expect(await psql(pg.url, 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user')).toBe(
      'f\n',
    );
  });

  it('refuses a wrong password and a missing one', async () => {
    const wrong = pg.url.replace(/:[0-9a-f]{36}@/, ':not-the-password@');
    await expect(psql(wrong, 'SELECT 1')).rejects.toThrow(/password authentication failed/);
    const none = pg.url.replace(/:[0-9a-f]{36}@/, '@');
    await expect(psql(none, 'SELECT 1')).rejects.toThrow(/password/);
  });

  it('creates separate databases with tables', async () => {
    const one = await pg.createDatabase('first_test');
    const two = await pg.createDatabase('second_test');
    expect(one).toBe(pg.url.replace(/\/bty$/, '/first_test'));
    expect(two).toBe(pg.url.replace(/\/bty$/, '/second_test'));

    await psql(one, 'CREATE TABLE machines (mac text PRIMARY KEY, state text NOT NULL)');
    await psql(
      one,
      "INSERT INTO machines VALUES ('52-54-00-12-34-56', 'fresh'), ('52-54-00-ab-cd-ef', 'done')",
    );
    expect(await psql(one, 'SELECT mac, state FROM machines ORDER BY mac')).toBe(
      '52-54-00-12-34-56|fresh\n52-54-00-ab-cd-ef|done\n',
    );
    expect(await psql(one, 'SELECT current_database()')).toBe('first_test\n');

    // The second database is clean: the table exists only in the first.
    expect(await psql(two, "SELECT to_regclass('machines') IS NULL")).toBe('t\n');
    await psql(two, 'CREATE TABLE machines (mac text PRIMARY KEY)');
    await psql(two, "INSERT INTO machines VALUES ('aa-bb-cc-dd-ee-ff')");
    expect(await psql(two, 'SELECT count(*) FROM machines')).toBe('1\n');
    expect(await psql(one, 'SELECT count(*) FROM machines')).toBe('2\n');
  });

  it('takes a keyword as a database name', async () => {
    expect(await psql(await pg.createDatabase('user'), 'SELECT current_database()')).toBe('user\n');
  });

  it('rejects a duplicate or odd database name', async () => {
    await expect(pg.createDatabase('first_test')).rejects.toThrow(/already exists/);
    await expect(pg.createDatabase('Robert"; DROP')).rejects.toThrow(/not a plain/);
  });

  it('keeps a log', () => {
    expect(pg.logs()).toMatch(/ready to accept connections/);
  });

  it('stops by PID, leaves no process or folder behind, and stops again', async () => {
    expect(await pgrep(pg.dataDir)).toEqual([String(pg.pid)]);
    expect((await pgrep(pg.clusterName)).length).toBeGreaterThan(1); // postmaster and children
    await pg.stop();
    expect(await pgrep(pg.dataDir)).toEqual([]);
    expect(await pgrep(pg.clusterName)).toEqual([]);
    expect(existsSync(pg.dir)).toBe(false);
    expect(await accepts(pg.port)).toBe(false);
    await pg.stop();
    await expect(pg.createDatabase('after_stop')).rejects.toThrow(/stopped/);
  });
});

describe('two servers at once', () => {
  it('get their own ports and folders', async () => {
    const started = await Promise.allSettled([startPostgres(), startPostgres()]);
    const servers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const [a, b] = servers;
    try {
      for (const s of started) if (s.status === 'rejected') throw s.reason;
      if (!a || !b) throw new Error('unreachable');
      expect(a.port).not.toBe(b.port);
      expect(a.dir).not.toBe(b.dir);
      await psql(a.url, 'CREATE TABLE only_in_a (x int)');
      expect(await psql(b.url, "SELECT to_regclass('only_in_a') IS NULL")).toBe('t\n');
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
    for (const s of servers) expect(await pgrep(s.dataDir)).toEqual([]);
  });
});
