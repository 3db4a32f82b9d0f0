import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError, isBtyError } from '../../src/core/errors.ts';
import {
  CONFIG_SCHEMA,
  configSearchPaths,
  envVarName,
  loadConfig,
  redactConfig,
  redactUrlPassword,
  REDACTED,
  renderConfigJson,
  resolvePaths,
  type ConfigField,
  type LoadConfigOptions,
} from '../../src/web/config.ts';

let root: string;
let counter = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'bty-web-config-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A fresh, empty folder for one test: `etc/` and `state/` start missing. */
async function sandbox(): Promise<{ dir: string; etc: string; state: string }> {
  const dir = join(root, `case-${++counter}`);
  await mkdir(dir, { recursive: true });
  return { dir, etc: join(dir, 'etc'), state: join(dir, 'state') };
}

/** A path inside the test folder that never exists. */
function missing(): string {
  return join(root, 'does-not-exist');
}

async function write(path: string, text: string): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  return path;
}

/** loadConfig's error, asserted to be a BtyError. */
async function loadError(options: LoadConfigOptions): Promise<BtyError> {
  const err: unknown = await loadConfig(options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isBtyError(err, 'BTY_ERR_CONFIG_INVALID'), String(err)).toBe(true);
  return err as BtyError;
}

function allFields(): [string, string, ConfigField][] {
  return Object.entries(CONFIG_SCHEMA).flatMap(([section, fields]) =>
    Object.entries(fields as Record<string, ConfigField>).map(
      ([key, field]) => [section, key, field] as [string, string, ConfigField],
    ),
  );
}

describe('defaults', () => {
  it('with no file and no variable every key has its default and the source "default"', async () => {
    const loaded = await loadConfig({ configPaths: [missing()], env: {} });
    for (const [section, key, field] of allFields()) {
      const table = (loaded.config as unknown as Record<string, Record<string, unknown>>)[section];
      expect(table?.[key], `${section}.${key}`).toBe(field.default);
      expect(loaded.sources[`${section}.${key}` as keyof typeof loaded.sources]).toBe('default');
    }
    expect(loaded.files).toEqual([]);
    expect(loaded.warnings).toEqual([]);
  });

  it('keeps the upstream defaults and the new sections small', async () => {
    const { etc, state } = await sandbox();
    const { config } = await loadConfig({ etcDir: etc, env: { BTY_PATHS_STATE_DIR: state } });
    expect(config.server).toEqual({
      host: '0.0.0.0',
      port: 8080,
      trusted_proxy: '',
      session_secret: '',
    });
    expect(config.admin.password).toBe('bty-lab');
    expect(config.paths.state_dir).toBe(state);
    expect(config.tuning).toEqual({ backup_max_parallel: 1, max_upload_bytes: 214748364800 });
    expect(config.boot).toEqual({ release_repo: 'safl/bty', release_url: '', seed_dir: '' });
    expect(config.database).toEqual({ url: '' });
    expect(config.tftp).toEqual({ enabled: false, host: '0.0.0.0', port: 69, root: '' });
    expect(config.cache).toEqual({ mode: 'pull-through', dir: '', max_bytes: 0, concurrency: 2 });
  });

  it('refuses a cache mode it does not know, naming the choices', async () => {
    await expect(loadConfig({ configPaths: [], env: { BTY_CACHE_MODE: 'lazy' } })).rejects.toThrow(
      /must be one of pull-through, curated, got "lazy"/,
    );
  });

  it('every setting has a BTY_<SECTION>_<KEY> variable and a default of its own type', () => {
    const names = allFields().map(([section, key]) => envVarName(section, key));
    expect(names).toContain('BTY_SERVER_PORT');
    expect(names).toContain('BTY_TUNING_MAX_UPLOAD_BYTES');
    expect(names).toContain('BTY_NETBOOT_TFTP_PROBE_HOST');
    expect(new Set(names).size).toBe(names.length);
    for (const [, , field] of allFields()) {
      const type = { string: 'string', int: 'number', bool: 'boolean' }[field.kind];
      expect(typeof field.default).toBe(type);
      expect(field.doc.length).toBeGreaterThan(10);
    }
  });
});

describe('search order', () => {
  it('lists the candidates lowest priority first', async () => {
    const { etc, state } = await sandbox();
    expect(
      configSearchPaths({
        etcDir: etc,
        env: { BTY_CONFIG_DIR: '/d', BTY_CONFIG_FILE: '/f.toml', BTY_PATHS_STATE_DIR: state },
      }),
    ).toEqual([
      join(etc, 'conf.d'),
      join(etc, 'bty.toml'),
      '/d',
      '/f.toml',
      join(state, 'bty.toml'),
    ]);
    // Unset or empty BTY_CONFIG_* add nothing; the state dir falls back to /var/lib/bty.
    expect(
      configSearchPaths({ etcDir: etc, env: { BTY_CONFIG_DIR: '', BTY_CONFIG_FILE: '' } }),
    ).toEqual([join(etc, 'conf.d'), join(etc, 'bty.toml'), '/var/lib/bty/bty.toml']);
    // A state dir given on the command line moves the last candidate too.
    expect(
      configSearchPaths({
        etcDir: etc,
        env: { BTY_PATHS_STATE_DIR: state },
        overrides: { paths: { state_dir: '/from-cli' } },
      }).at(-1),
    ).toBe('/from-cli/bty.toml');
  });

  it('applies conf.d, bty.toml, BTY_CONFIG_DIR, BTY_CONFIG_FILE, <state>/bty.toml in that order', async () => {
    const { dir, etc, state } = await sandbox();
    // Each layer sets server.host (so the last one wins) and one key of its own.
    const d10 = await write(
      join(etc, 'conf.d', '10-base.toml'),
      '[server]\nhost = "conf.d-10"\ntrusted_proxy = "yes"\n',
    );
    const d20 = await write(
      join(etc, 'conf.d', '20-more.toml'),
      '[server]\nhost = "conf.d-20"\n[withcache]\nurl = "http://cache:8081"\n',
    );
    const etcFile = await write(
      join(etc, 'bty.toml'),
      '[server]\nhost = "etc"\n[paths]\nboot_dir = "/srv/boot"\n',
    );
    const envDir = join(dir, 'envdir');
    const envDirFile = await write(
      join(envDir, 'a.toml'),
      '[server]\nhost = "env-dir"\n[boot]\nseed_dir = "/seed"\n',
    );
    const envFile = await write(
      join(dir, 'env-file.toml'),
      '[server]\nhost = "env-file"\n[tftp]\nenabled = true\n',
    );
    const stateFile = await write(
      join(state, 'bty.toml'),
      '[server]\nhost = "state"\n[admin]\npassword = "s3cret"\n',
    );
    const loaded = await loadConfig({
      etcDir: etc,
      env: { BTY_CONFIG_DIR: envDir, BTY_CONFIG_FILE: envFile, BTY_PATHS_STATE_DIR: state },
    });
    expect(loaded.files).toEqual([d10, d20, etcFile, envDirFile, envFile, stateFile]);
    expect(loaded.config.server.host).toBe('state');
    expect(loaded.sources['server.host']).toBe(`toml:${stateFile}`);
    expect(loaded.config.server.trusted_proxy).toBe('yes');
    expect(loaded.sources['server.trusted_proxy']).toBe(`toml:${d10}`);
    expect(loaded.sources['withcache.url']).toBe(`toml:${d20}`);
    expect(loaded.sources['paths.boot_dir']).toBe(`toml:${etcFile}`);
    expect(loaded.sources['boot.seed_dir']).toBe(`toml:${envDirFile}`);
    expect(loaded.config.tftp.enabled).toBe(true);
    expect(loaded.sources['tftp.enabled']).toBe(`toml:${envFile}`);
    expect(loaded.config.admin.password).toBe('s3cret');
    expect(loaded.sources['server.port']).toBe('default');
    expect(loaded.warnings).toEqual([]);

    // Drop BTY_CONFIG_FILE: the next layer down now decides keys it set alone.
    const without = await loadConfig({
      etcDir: etc,
      env: { BTY_CONFIG_DIR: envDir, BTY_PATHS_STATE_DIR: state },
    });
    expect(without.config.tftp.enabled).toBe(false);
    expect(without.files).not.toContain(envFile);
  });

  it('merges key by key, not section by section', async () => {
    const { dir } = await sandbox();
    const a = await write(join(dir, 'a.toml'), '[server]\nhost = "127.0.0.1"\nport = 9000\n');
    const b = await write(join(dir, 'b.toml'), '[server]\nport = 9001\n');
    const loaded = await loadConfig({ configPaths: [a, b], env: {} });
    expect(loaded.config.server).toMatchObject({ host: '127.0.0.1', port: 9001 });
    expect(loaded.sources['server.host']).toBe(`toml:${a}`);
    expect(loaded.sources['server.port']).toBe(`toml:${b}`);
  });

  it('reads a drop-in folder in name order, skipping hidden files, other suffixes and folders', async () => {
    const { dir } = await sandbox();
    const drop = join(dir, 'conf.d');
    const late = await write(join(drop, 'b-late.toml'), '[server]\nport = 2\n');
    const early = await write(join(drop, 'a-early.toml'), '[server]\nport = 1\n');
    const tenth = await write(join(drop, '10.toml'), '[server]\nport = 3\n');
    await write(join(drop, '.hidden.toml'), '[server]\nport = 4\n');
    await write(join(drop, 'z.toml.bak'), '[server]\nport = 5\n');
    await write(join(drop, 'notes.txt'), 'not toml at all [[[');
    await mkdir(join(drop, 'sub.toml'));
    await write(join(drop, 'sub.toml', 'inner.toml'), '[server]\nport = 6\n');
    const loaded = await loadConfig({ configPaths: [drop], env: {} });
    expect(loaded.files).toEqual([tenth, early, late]);
    expect(loaded.config.server.port).toBe(2);
  });

  it('skips missing candidates without a word and starts on the defaults', async () => {
    const { dir, etc, state } = await sandbox();
    const loaded = await loadConfig({
      etcDir: etc,
      env: {
        BTY_CONFIG_DIR: join(dir, 'no-such-dir'),
        BTY_CONFIG_FILE: join(dir, 'no-such.toml'),
        BTY_PATHS_STATE_DIR: state,
      },
    });
    expect(loaded.files).toEqual([]);
    expect(loaded.warnings).toEqual([]);
    expect(loaded.config.server.port).toBe(8080);
    // A path through a regular file (ENOTDIR) counts as missing too.
    const file = await write(join(dir, 'plain'), '');
    expect((await loadConfig({ configPaths: [join(file, 'x.toml')], env: {} })).files).toEqual([]);
  });

  it('--config paths replace the whole default list, in the order given', async () => {
    const { dir, etc, state } = await sandbox();
    await write(join(etc, 'bty.toml'), '[server]\nhost = "from-etc"\n');
    await write(join(state, 'bty.toml'), '[server]\nhost = "from-state"\n');
    const envFile = await write(join(dir, 'env.toml'), '[server]\nhost = "from-env-file"\n');
    const one = await write(join(dir, 'one.toml'), '[server]\nport = 1111\n');
    const folder = join(dir, 'folder');
    const inFolder = await write(
      join(folder, 'x.toml'),
      '[server]\nport = 2222\nhost = "folder"\n',
    );
    const loaded = await loadConfig({
      configPaths: [folder, one],
      etcDir: etc,
      env: { BTY_PATHS_STATE_DIR: state, BTY_CONFIG_FILE: envFile },
    });
    expect(loaded.candidates).toEqual([folder, one]);
    expect(loaded.files).toEqual([inFolder, one]);
    expect(loaded.config.server).toMatchObject({ host: 'folder', port: 1111 });
  });

  it('a state_dir set in TOML does not move the <state>/bty.toml candidate', async () => {
    const { dir, etc, state } = await sandbox();
    const other = join(dir, 'other-state');
    await write(join(other, 'bty.toml'), '[server]\nport = 7777\n');
    const etcFile = await write(
      join(etc, 'bty.toml'),
      `[paths]\nstate_dir = ${JSON.stringify(other)}\n`,
    );
    const loaded = await loadConfig({ etcDir: etc, env: { BTY_PATHS_STATE_DIR: state } });
    expect(loaded.files).toEqual([etcFile]);
    expect(loaded.config.server.port).toBe(8080);
    // The variable wins over the TOML value of state_dir, as for every key.
    expect(loaded.config.paths.state_dir).toBe(state);
    expect(loaded.sources['paths.state_dir']).toBe('env:BTY_PATHS_STATE_DIR');
  });
});

describe('TOML content', () => {
  it('warns about unknown sections and keys, naming the file, and loads the rest', async () => {
    const { dir } = await sandbox();
    const file = await write(
      join(dir, 'bty.toml'),
      [
        'stray = 1',
        '[server]',
        'port = 9090',
        'prot = 9091',
        '[future]',
        'knob = "x"',
        '[ramboot]',
        'overlay_size = "10G"',
      ].join('\n'),
    );
    const loaded = await loadConfig({ configPaths: [file], env: {} });
    expect(loaded.config.server.port).toBe(9090);
    expect(loaded.warnings).toEqual([
      `${file}: unknown top-level key stray ignored`,
      `${file}: unknown key prot in [server] ignored`,
      `${file}: unknown section [future] ignored`,
      `${file}: unknown section [ramboot] ignored`,
    ]);
  });

  it('accepts every key of an upstream bty.toml without a warning', async () => {
    const { dir } = await sandbox();
    const file = await write(
      join(dir, 'bty.toml'),
      `[admin]
password = "pw"
[server]
host = "10.0.0.1"
port = 8443
trusted_proxy = "1"
session_secret = "abc"
[paths]
state_dir = "/srv/bty"
boot_dir = "/srv/boot"
backup_dir = "/srv/backups"
catalog_file = "/srv/catalog.toml"
[withcache]
url = "http://cache:8081"
[nbdmux]
url = "http://nbd:9000"
[netboot]
tftp_probe_host = "10.0.0.2"
[tuning]
backup_max_parallel = 4
max_upload_bytes = 1073741824
`,
    );
    const loaded = await loadConfig({ configPaths: [file], env: {} });
    expect(loaded.warnings).toEqual([]);
    expect(loaded.config.tuning).toEqual({ backup_max_parallel: 4, max_upload_bytes: 1073741824 });
    expect(loaded.config.netboot.tftp_probe_host).toBe('10.0.0.2');
  });

  it.each([
    [
      '[server]\nport = "8080"',
      '[server] port must be an integer from 1 to 65535, got string "8080"',
    ],
    ['[server]\nport = 8080.0', '[server] port must be an integer from 1 to 65535, got float 8080'],
    ['[server]\nport = 70000', '[server] port must be an integer from 1 to 65535, got 70000'],
    ['[server]\nport = 0', '[server] port must be an integer from 1 to 65535, got 0'],
    [
      '[tuning]\nmax_upload_bytes = 9223372036854775807',
      '[tuning] max_upload_bytes must be an integer of at least 1, got 9223372036854775807',
    ],
    [
      '[tftp]\nenabled = "yes"',
      '[tftp] enabled must be a boolean (true or false), got string "yes"',
    ],
    ['[tftp]\nenabled = 1', '[tftp] enabled must be a boolean (true or false), got integer 1'],
    ['[admin]\npassword = 1234', '[admin] password must be a string, got integer 1234'],
    ['[database]\nurl = ["a"]', '[database] url must be a string, got an array'],
    ['[server]\nhost = { a = 1 }', '[server] host must be a non-empty string, got a table'],
    ['[server]\nhost = ""', '[server] host must not be empty'],
    [
      '[paths]\nstate_dir = 1979-05-27',
      '[paths] state_dir must be a non-empty string, got a date-time',
    ],
    ['server = 5', '[server] must be a table, got integer 5'],
  ])('a wrong type is an error naming the file, section and key: %j', async (toml, message) => {
    const { dir } = await sandbox();
    const file = await write(join(dir, 'bad.toml'), `${toml}\n`);
    const err = await loadError({ configPaths: [file], env: {} });
    expect(err.message).toBe(`${file}: ${message}`);
    expect(err.exitCode).toBe(2);
    expect(err.httpStatus).toBe(500);
    expect(err.details).toMatchObject({ file });
  });

  it('malformed TOML stops the load with the file and the position', async () => {
    const { dir } = await sandbox();
    const good = await write(join(dir, 'a.toml'), '[server]\nport = 1\n');
    const bad = await write(join(dir, 'b.toml'), '[server]\nport = = 2\n');
    const err = await loadError({ configPaths: [good, bad], env: {} });
    expect(err.message).toMatch(
      new RegExp(
        `^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not valid TOML: .*\\(at line 2, column \\d+\\)$`,
      ),
    );
    expect(err.hint).toMatch(/bty\.toml/);
  });

  it('below-minimum tuning values are normalised the way upstream does, with a warning', async () => {
    const { dir } = await sandbox();
    const file = await write(
      join(dir, 'bty.toml'),
      '[tuning]\nbackup_max_parallel = 0\nmax_upload_bytes = -5\n',
    );
    const loaded = await loadConfig({ configPaths: [file], env: {} });
    expect(loaded.config.tuning).toEqual({
      backup_max_parallel: 1,
      max_upload_bytes: 214748364800,
    });
    expect(loaded.sources['tuning.backup_max_parallel']).toBe(`toml:${file}`);
    expect(loaded.warnings).toEqual([
      `${file}: [tuning] backup_max_parallel = 0 is below 1; using the minimum 1`,
      `${file}: [tuning] max_upload_bytes = -5 is below 1; using the default 214748364800`,
    ]);
  });
});

describe('environment overrides', () => {
  it('BTY_<SECTION>_<KEY> beats every file, typed, with its source', async () => {
    const { dir } = await sandbox();
    const file = await write(
      join(dir, 'bty.toml'),
      '[server]\nport = 9000\nhost = "10.0.0.1"\n[tftp]\nenabled = true\nport = 6969\n',
    );
    const loaded = await loadConfig({
      configPaths: [file],
      env: {
        BTY_SERVER_PORT: ' 9100 ',
        BTY_TFTP_ENABLED: 'off',
        BTY_TUNING_MAX_UPLOAD_BYTES: '1099511627776',
        BTY_ADMIN_PASSWORD: '  spaced pw  ',
        BTY_DATABASE_URL: 'postgres://bty:pw@db/bty',
        BTY_BOOT_RELEASE_REPO: 'me/bty-fork',
        BTY_WITHCACHE_URL: 'http://cache:8081',
      },
    });
    expect(loaded.config.server.port).toBe(9100);
    expect(loaded.sources['server.port']).toBe('env:BTY_SERVER_PORT');
    expect(loaded.config.server.host).toBe('10.0.0.1');
    expect(loaded.sources['server.host']).toBe(`toml:${file}`);
    expect(loaded.config.tftp).toMatchObject({ enabled: false, port: 6969 });
    expect(loaded.sources['tftp.enabled']).toBe('env:BTY_TFTP_ENABLED');
    expect(loaded.config.tuning.max_upload_bytes).toBe(1099511627776);
    // Strings are taken exactly as given (the login code trims the password itself).
    expect(loaded.config.admin.password).toBe('  spaced pw  ');
    expect(loaded.config.database.url).toBe('postgres://bty:pw@db/bty');
    expect(loaded.config.boot.release_repo).toBe('me/bty-fork');
    expect(loaded.sources['withcache.url']).toBe('env:BTY_WITHCACHE_URL');
  });

  it('an empty variable counts as unset', async () => {
    const { etc, state } = await sandbox();
    const loaded = await loadConfig({
      etcDir: etc,
      env: { BTY_PATHS_STATE_DIR: state, BTY_SERVER_PORT: '', BTY_ADMIN_PASSWORD: '' },
    });
    expect(loaded.config.server.port).toBe(8080);
    expect(loaded.config.admin.password).toBe('bty-lab');
    expect(loaded.sources['server.port']).toBe('default');
  });

  it.each([
    ['1', true],
    ['TRUE', true],
    ['yes', true],
    [' On ', true],
    ['0', false],
    ['False', false],
    ['no', false],
    ['OFF', false],
  ])('reads %j as the boolean %s', async (raw, value) => {
    const loaded = await loadConfig({ configPaths: [missing()], env: { BTY_TFTP_ENABLED: raw } });
    expect(loaded.config.tftp.enabled).toBe(value);
  });

  it.each([
    ['BTY_SERVER_PORT', 'abc', 'an integer from 1 to 65535'],
    ['BTY_SERVER_PORT', '80.5', 'an integer from 1 to 65535'],
    ['BTY_SERVER_PORT', '8080x', 'an integer from 1 to 65535'],
    ['BTY_SERVER_PORT', '0', 'an integer from 1 to 65535'],
    ['BTY_SERVER_PORT', '65536', 'an integer from 1 to 65535'],
    ['BTY_SERVER_PORT', '0x1f90', 'an integer from 1 to 65535'],
    ['BTY_TFTP_PORT', '-1', 'an integer from 1 to 65535'],
    ['BTY_TUNING_MAX_UPLOAD_BYTES', '1e9', 'an integer of at least 1'],
    ['BTY_TUNING_MAX_UPLOAD_BYTES', '99999999999999999999', 'an integer of at least 1'],
    ['BTY_TUNING_BACKUP_MAX_PARALLEL', 'two', 'an integer of at least 1'],
    ['BTY_TFTP_ENABLED', 'maybe', 'a boolean (true/false, yes/no, on/off, 1/0)'],
  ])('%s=%j is an error naming the variable and the type (exit 2)', async (name, raw, type) => {
    const err = await loadError({ configPaths: [missing()], env: { [name]: raw } });
    expect(err.message).toMatch(new RegExp(`^${name} must be `));
    expect(err.message).toContain(type);
    expect(err.details).toMatchObject({ variable: name, value: raw });
    expect(err.exitCode).toBe(2);
    expect(err.code).toBe('BTY_ERR_CONFIG_INVALID');
  });

  it('an error in a variable beats a valid file (the variable is what gets used)', async () => {
    const { dir } = await sandbox();
    const file = await write(join(dir, 'bty.toml'), '[server]\nport = 9000\n');
    const err = await loadError({ configPaths: [file], env: { BTY_SERVER_PORT: 'http' } });
    expect(err.message).toBe('BTY_SERVER_PORT must be an integer from 1 to 65535, got "http"');
  });

  it('warns about a variable that looks like an override of a key that does not exist', async () => {
    const loaded = await loadConfig({
      configPaths: [missing()],
      env: {
        BTY_SERVER_PROT: '1',
        BTY_TFTP_ROOTDIR: '/x',
        BTY_SERVER_NOTHING: '',
        // Not overrides of our sections: no warning.
        BTY_IMAGE_ROOT: '/images',
        BTY_RAMBOOT_OVERLAY_SIZE: '10G',
        BTY_CONFIG_FILE: '/x.toml',
      },
    });
    expect(loaded.warnings).toEqual([
      'environment variable BTY_SERVER_PROT matches no setting in [server]; ignored',
      'environment variable BTY_TFTP_ROOTDIR matches no setting in [tftp]; ignored',
    ]);
  });
});

describe('command-line overrides', () => {
  it('beat the environment and are recorded as "cli"', async () => {
    const loaded = await loadConfig({
      configPaths: [missing()],
      env: { BTY_SERVER_HOST: '10.0.0.1', BTY_SERVER_PORT: '9000' },
      overrides: { server: { host: '127.0.0.1', port: '8181' }, tftp: { enabled: true } },
    });
    expect(loaded.config.server).toMatchObject({ host: '127.0.0.1', port: 8181 });
    expect(loaded.sources['server.host']).toBe('cli');
    expect(loaded.sources['server.port']).toBe('cli');
    expect(loaded.sources['tftp.enabled']).toBe('cli');
  });

  it('leave keys given as undefined alone', async () => {
    const loaded = await loadConfig({
      configPaths: [missing()],
      env: { BTY_SERVER_PORT: '9000' },
      overrides: { server: { host: undefined, port: undefined } },
    });
    expect(loaded.config.server.port).toBe(9000);
    expect(loaded.sources['server.host']).toBe('default');
  });

  it.each([
    [
      { server: { port: 'eighty' } },
      'server.port from the command line must be an integer from 1 to 65535, got "eighty"',
    ],
    [
      { server: { port: 0 } },
      'server.port from the command line must be an integer from 1 to 65535, got 0',
    ],
    [
      { server: { port: 80.5 } },
      'server.port from the command line must be an integer from 1 to 65535, got 80.5',
    ],
    [{ server: { host: '' } }, 'server.host from the command line must not be empty'],
  ])('refuse a bad value: %j', async (overrides, message) => {
    const err = await loadError({ configPaths: [missing()], env: {}, overrides });
    expect(err.message).toBe(message);
    expect(err.exitCode).toBe(2);
  });
});

describe('showing the configuration', () => {
  it('redacts the admin password, the session secret and the database password', async () => {
    const { dir } = await sandbox();
    const file = await write(
      join(dir, 'bty.toml'),
      '[admin]\npassword = "hunter2-admin"\n[server]\nsession_secret = "sekrit-session"\n',
    );
    const loaded = await loadConfig({
      configPaths: [file],
      env: { BTY_DATABASE_URL: 'postgresql://bty:db-pass-99@db.lan:5432/bty?sslmode=require' },
    });
    const json = renderConfigJson(loaded);
    expect(json).not.toContain('hunter2-admin');
    expect(json).not.toContain('sekrit-session');
    expect(json).not.toContain('db-pass-99');
    const shown: unknown = JSON.parse(json);
    expect(shown).toMatchObject({
      config: {
        admin: { password: REDACTED },
        server: { session_secret: REDACTED, port: 8080 },
        database: { url: `postgresql://bty:${REDACTED}@db.lan:5432/bty?sslmode=require` },
      },
      sources: {
        'admin.password': `toml:${file}`,
        'database.url': 'env:BTY_DATABASE_URL',
        'server.port': 'default',
      },
      files: [file],
      warnings: [],
    });
    // The loaded configuration itself is left untouched.
    expect(loaded.config.admin.password).toBe('hunter2-admin');
  });

  it('leaves empty secrets empty, so "not set" stays visible', () => {
    const config = structuredClone(
      Object.fromEntries(
        Object.entries(CONFIG_SCHEMA).map(([section, fields]) => [
          section,
          Object.fromEntries(
            Object.entries(fields as Record<string, ConfigField>).map(([k, f]) => [k, f.default]),
          ),
        ]),
      ),
    ) as unknown as Parameters<typeof redactConfig>[0];
    const redacted = redactConfig(config);
    expect(redacted.server.session_secret).toBe('');
    expect(redacted.database.url).toBe('');
    expect(redacted.admin.password).toBe(REDACTED);
  });

  it.each([
    ['postgres://user:pw@host/db', `postgres://user:${REDACTED}@host/db`],
    ['postgres://user@host/db', 'postgres://user@host/db'],
    ['postgres://host:5432/db', 'postgres://host:5432/db'],
    ['postgres://u:p@ss/w@host/db', `postgres://u:${REDACTED}@host/db`],
    [
      'postgres://host/db?user=u&password=pw&sslmode=x',
      `postgres://host/db?user=u&password=${REDACTED}&sslmode=x`,
    ],
    ['postgres://host/db?sslpassword=pw', `postgres://host/db?sslpassword=${REDACTED}`],
    ['host=db user=bty password=pw', REDACTED],
    ['/var/lib/bty/state.db', '/var/lib/bty/state.db'],
  ])('redactUrlPassword(%j)', (url, expected) => {
    expect(redactUrlPassword(url)).toBe(expected);
  });
});

describe('derived paths', () => {
  it('puts empty path settings under the state dir and keeps given ones', async () => {
    const { config } = await loadConfig({
      configPaths: [missing()],
      env: { BTY_PATHS_STATE_DIR: '/srv/bty', BTY_PATHS_BOOT_DIR: '/mnt/boot' },
    });
    expect(resolvePaths(config)).toEqual({
      stateDir: '/srv/bty',
      stateDb: '/srv/bty/state.db',
      sessionSecretFile: '/srv/bty/session-secret',
      bootDir: '/mnt/boot',
      backupDir: '/srv/bty/backups',
      catalogFile: '/srv/bty/catalog.toml',
      tftpRoot: '/srv/bty/tftp',
      cacheDir: '/srv/bty/cache',
    });
  });
});
