/**
 * bty-web's configuration: one typed object built from four layers, each overriding the one
 * before it key by key (never section by section):
 *
 *   built-in defaults  <  bty.toml files  <  BTY_<SECTION>_<KEY> variables  <  command line
 *
 * Which TOML files, lowest priority first (a later file wins for every key it sets):
 *
 *   1. `/etc/bty/conf.d/` — its `*.toml` drop-ins in name order;
 *   2. `/etc/bty/bty.toml`;
 *   3. `$BTY_CONFIG_DIR`, when set (a drop-in folder, or a single file);
 *   4. `$BTY_CONFIG_FILE`, when set (a single file, or a drop-in folder);
 *   5. `<state>/bty.toml`, where `<state>` is the command line's state dir, else
 *      `$BTY_PATHS_STATE_DIR`, else `/var/lib/bty`. A `state_dir` written inside a TOML file does
 *      not move this candidate: the file that might set it could not be found through it.
 *
 * Passing `--config PATH` (repeatable) replaces that whole list with the given paths, in the
 * given order, last one winning. Any candidate may be a file or a folder; a folder stands for its
 * `*.toml` files sorted by name (hidden files and sub-folders skipped). A path that does not
 * exist is skipped without a word, so a fresh machine starts on the defaults; a file that is not
 * valid TOML, or a known key holding the wrong type, stops the start with an error naming the
 * file, the section and the key. Unknown sections and keys are reported as warnings and ignored,
 * so a newer bty.toml still loads on an older server.
 *
 * Every setting has an environment variable `BTY_<SECTION>_<KEY>` (upper case, e.g.
 * `BTY_SERVER_PORT`). It beats every file. An empty variable counts as unset. Strings are taken
 * as they are; integers and booleans are parsed, and a value that does not parse is an error
 * naming the variable and the type it must have (exit code 2), never a silent fall-back.
 *
 * The result records, for every `section.key`, where its value came from: `default`,
 * `toml:<file>`, `env:<VARIABLE>` or `cli`. `renderConfigJson` shows it all with the secrets
 * (admin password, session secret, the password inside the database URL) redacted.
 *
 * Where this differs from upstream bty-web, on purpose:
 * - the configuration is resolved once, and an explicit `--config` list is honoured everywhere
 *   (upstream honours it for the listen address only and re-reads the default search later);
 * - TOML values are type-checked when loaded (upstream checks nothing and fails at use);
 * - unknown sections and keys are reported as warnings (upstream ignores them silently);
 * - `[boot]` (`release_repo`, `release_url`, `seed_dir`), `[database]`, `[tftp]` and `[cache]` are
 *   new sections; the first
 *   gives the upstream variables `BTY_BOOT_RELEASE_REPO` and `BTY_BOOT_SEED_DIR` a TOML home.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { BtyError } from '../core/errors.ts';

/** The effective configuration. Keys keep their TOML spelling (snake_case). */
export interface BtyWebConfig {
  server: { host: string; port: number; trusted_proxy: string; session_secret: string };
  paths: { state_dir: string; boot_dir: string; backup_dir: string; catalog_file: string };
  admin: { password: string };
  boot: { release_repo: string; release_url: string; seed_dir: string };
  withcache: { url: string };
  nbdmux: { url: string };
  netboot: { tftp_probe_host: string };
  tuning: { backup_max_parallel: number; max_upload_bytes: number };
  database: { url: string };
  tftp: { enabled: boolean; host: string; port: number; root: string };
  cache: { mode: string; dir: string; max_bytes: number; concurrency: number };
}

export type ConfigSection = keyof BtyWebConfig;

/** `section.key` for every setting, e.g. `'server.port'`. */
export type ConfigKey = {
  [S in ConfigSection]: `${S}.${keyof BtyWebConfig[S] & string}`;
}[ConfigSection];

export type ConfigSource = 'default' | 'cli' | `toml:${string}` | `env:${string}`;

interface FieldBase {
  /** One line for the Settings page and the docs. */
  readonly doc: string;
  /** How the value is hidden when the configuration is shown. */
  readonly secret?: 'whole' | 'url-password';
}

export interface StringField extends FieldBase {
  readonly kind: 'string';
  readonly default: string;
  /** An empty string is refused (from TOML or the command line; an empty variable is unset). */
  readonly nonEmpty?: boolean;
  /** The only values accepted, when set. */
  readonly choices?: readonly string[];
}

export interface IntField extends FieldBase {
  readonly kind: 'int';
  readonly default: number;
  readonly min: number;
  readonly max: number;
  /**
   * Upstream tolerates some values below the minimum: `min` raises them to it, `default` replaces
   * them with the default. Either way a warning says so. Unset: below the minimum is an error.
   */
  readonly belowMin?: 'min' | 'default';
}

export interface BoolField extends FieldBase {
  readonly kind: 'bool';
  readonly default: boolean;
}

export type ConfigField = StringField | IntField | BoolField;

type FieldFor<T> = [T] extends [boolean]
  ? BoolField
  : [T] extends [number]
    ? IntField
    : StringField;

export type ConfigSchema = {
  readonly [S in ConfigSection]: {
    readonly [K in keyof BtyWebConfig[S]]: FieldFor<BtyWebConfig[S][K]>;
  };
};

const GIB = 1024 ** 3;

/** Every setting bty-web knows: its type, default and meaning. */
export const CONFIG_SCHEMA: ConfigSchema = {
  server: {
    host: {
      kind: 'string',
      default: '0.0.0.0',
      nonEmpty: true,
      doc: 'Address the HTTP server listens on.',
    },
    port: {
      kind: 'int',
      default: 8080,
      min: 1,
      max: 65535,
      doc: 'TCP port the HTTP server listens on.',
    },
    trusted_proxy: {
      kind: 'string',
      default: '',
      doc: 'Any non-empty value: take the client address from the first X-Forwarded-For entry.',
    },
    session_secret: {
      kind: 'string',
      default: '',
      secret: 'whole',
      doc: 'Key that signs session cookies; empty: generated once into <state_dir>/session-secret.',
    },
  },
  paths: {
    state_dir: {
      kind: 'string',
      default: '/var/lib/bty',
      nonEmpty: true,
      doc: 'Folder of the embedded database, the session secret and a bty.toml.',
    },
    boot_dir: {
      kind: 'string',
      default: '',
      doc: 'Folder of the netboot artifacts served under /boot/; empty: <state_dir>/boot.',
    },
    backup_dir: {
      kind: 'string',
      default: '',
      doc: 'Folder of backup bundles; empty: <state_dir>/backups.',
    },
    catalog_file: {
      kind: 'string',
      default: '',
      doc: 'Shown for reference only (upstream legacy); empty: <state_dir>/catalog.toml.',
    },
  },
  admin: {
    password: {
      kind: 'string',
      default: 'bty-lab',
      secret: 'whole',
      doc: 'The one operator password. The default is public knowledge: change it.',
    },
  },
  boot: {
    release_repo: {
      kind: 'string',
      default: 'safl/bty',
      nonEmpty: true,
      doc: 'GitHub owner/repo whose releases provide the netboot artifacts.',
    },
    release_url: {
      kind: 'string',
      default: '',
      doc: 'Base URL the netboot artifacts are fetched from; empty: the GitHub release of release_repo for this version.',
    },
    seed_dir: {
      kind: 'string',
      default: '',
      doc: 'Folder whose files are copied into the boot folder at start, never overwriting.',
    },
  },
  withcache: {
    url: {
      kind: 'string',
      default: '',
      doc: 'Base URL of a withcache artifact cache; empty: none.',
    },
  },
  nbdmux: {
    url: {
      kind: 'string',
      default: '',
      doc: 'Control-plane URL of nbdmux (ramboot, not implemented yet); empty: none.',
    },
  },
  netboot: {
    tftp_probe_host: {
      kind: 'string',
      default: '',
      doc: 'Host probed for a TFTP server; empty: the withcache host, else 127.0.0.1.',
    },
  },
  tuning: {
    backup_max_parallel: {
      kind: 'int',
      default: 1,
      min: 1,
      max: Number.MAX_SAFE_INTEGER,
      belowMin: 'min',
      doc: 'How many backups may run at once.',
    },
    max_upload_bytes: {
      kind: 'int',
      default: 200 * GIB,
      min: 1,
      max: Number.MAX_SAFE_INTEGER,
      belowMin: 'default',
      doc: 'Largest artifact accepted by PUT /boot/{name}, in bytes.',
    },
  },
  database: {
    url: {
      kind: 'string',
      default: '',
      secret: 'url-password',
      doc: 'Database URL (postgres://…); empty: embedded SQLite at <state_dir>/state.db.',
    },
  },
  tftp: {
    enabled: { kind: 'bool', default: false, doc: 'Run the built-in TFTP server.' },
    host: {
      kind: 'string',
      default: '0.0.0.0',
      nonEmpty: true,
      doc: 'Address the TFTP server listens on.',
    },
    port: {
      kind: 'int',
      default: 69,
      min: 1,
      max: 65535,
      doc: 'UDP port the TFTP server listens on.',
    },
    root: {
      kind: 'string',
      default: '',
      doc: 'Folder the TFTP server serves (read-only); empty: <state_dir>/tftp.',
    },
  },
  cache: {
    mode: {
      kind: 'string',
      default: 'pull-through',
      choices: ['pull-through', 'curated'],
      doc: 'pull-through: a catalog image is cached on its first request; curated: only images an operator downloaded are served from the cache.',
    },
    dir: {
      kind: 'string',
      default: '',
      doc: 'Folder of the artifact cache; empty: <state_dir>/cache.',
    },
    max_bytes: {
      kind: 'int',
      default: 0,
      min: 0,
      max: Number.MAX_SAFE_INTEGER,
      doc: 'Size limit of the cache in bytes (least recently used images no machine is bound to are evicted); 0: no limit.',
    },
    concurrency: {
      kind: 'int',
      default: 2,
      min: 1,
      max: 64,
      doc: 'How many cache downloads run at once.',
    },
  },
};

/** Values the command line sets; strings are parsed like environment variables. */
export type ConfigOverrides = {
  [S in ConfigSection]?: { [K in keyof BtyWebConfig[S]]?: BtyWebConfig[S][K] | string };
};

export interface LoadConfigOptions {
  /** `--config` paths (files or drop-in folders); when non-empty they replace the search list. */
  configPaths?: readonly string[];
  /** Defaults to `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Command-line values (e.g. --host, --port); they beat the environment. */
  overrides?: ConfigOverrides;
  /** The system configuration folder; `/etc/bty` unless a test points elsewhere. */
  etcDir?: string;
}

export interface LoadedConfig {
  config: BtyWebConfig;
  sources: Record<ConfigKey, ConfigSource>;
  /** The TOML files read, in the order applied (later won). */
  files: string[];
  /** The candidate paths searched, lowest priority first, before folders were expanded. */
  candidates: string[];
  warnings: string[];
}

export const DEFAULT_ETC_DIR = '/etc/bty';
export const REDACTED = '<redacted>';

type Value = string | number | boolean;
type Values = Record<string, Record<string, Value>>;

/** The environment variable that overrides `section.key`. */
export function envVarName(section: string, key: string): string {
  return `BTY_${section.toUpperCase()}_${key.toUpperCase()}`;
}

/** The candidate paths, lowest priority first (see the top of this file). */
export function configSearchPaths(options: LoadConfigOptions = {}): string[] {
  const explicit = options.configPaths ?? [];
  if (explicit.length > 0) return [...explicit];
  const env = options.env ?? process.env;
  const etcDir = options.etcDir ?? DEFAULT_ETC_DIR;
  const candidates = [join(etcDir, 'conf.d'), join(etcDir, 'bty.toml')];
  const dir = env.BTY_CONFIG_DIR;
  if (dir) candidates.push(dir);
  const file = env.BTY_CONFIG_FILE;
  if (file) candidates.push(file);
  const cliStateDir = options.overrides?.paths?.state_dir;
  const stateDir =
    (typeof cliStateDir === 'string' && cliStateDir !== '' ? cliStateDir : undefined) ??
    (env.BTY_PATHS_STATE_DIR || CONFIG_SCHEMA.paths.state_dir.default);
  candidates.push(join(stateDir, 'bty.toml'));
  return candidates;
}

/** Builds the effective configuration (see the top of this file for the precedence). */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<LoadedConfig> {
  const env = options.env ?? process.env;
  const warnings: string[] = [];
  const values: Values = {};
  const sources: Record<string, ConfigSource> = {};
  for (const [section, key, field] of schemaFields()) {
    (values[section] ??= {})[key] = field.default;
    sources[`${section}.${key}`] = 'default';
  }
  const set = (section: string, key: string, value: Value, source: ConfigSource): void => {
    (values[section] ??= {})[key] = value;
    sources[`${section}.${key}`] = source;
  };

  const candidates = configSearchPaths(options);
  const files: string[] = [];
  for (const candidate of candidates) {
    for (const file of await expandCandidate(candidate, warnings)) {
      const doc = await readTomlFile(file);
      if (doc === undefined) continue;
      files.push(file);
      applyToml(file, doc, set, warnings);
    }
  }

  for (const [section, key, field] of schemaFields()) {
    const name = envVarName(section, key);
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    const where: Origin = { label: name, details: { variable: name, section, key, value: raw } };
    set(section, key, fromText(field, raw, where, warnings), `env:${name}`);
  }
  warnings.push(...strayEnvWarnings(env));

  for (const [section, entries] of Object.entries(options.overrides ?? {})) {
    for (const [key, raw] of Object.entries(entries ?? {}) as [string, unknown][]) {
      if (raw === undefined) continue;
      const field = fieldOf(section, key);
      const where: Origin = {
        label: `${section}.${key} from the command line`,
        details: { section, key, source: 'cli' },
      };
      if (!field) throw invalid(`unknown setting ${section}.${key} from the command line`);
      const value =
        typeof raw === 'string' && field.kind !== 'string'
          ? fromText(field, raw, where, warnings)
          : fromValue(field, raw, where, warnings);
      set(section, key, value, 'cli');
    }
  }

  return {
    config: values as unknown as BtyWebConfig,
    sources,
    files,
    candidates,
    warnings,
  };
}

/** A copy of `config` with every secret replaced by `<redacted>` (empty values stay empty). */
export function redactConfig(config: BtyWebConfig): BtyWebConfig {
  const copy = structuredClone(config);
  const sections = copy as unknown as Values;
  for (const [section, key, field] of schemaFields()) {
    const table = sections[section];
    const value = table?.[key];
    if (!table || field.secret === undefined || typeof value !== 'string' || value === '') {
      continue;
    }
    table[key] = field.secret === 'whole' ? REDACTED : redactUrlPassword(value);
  }
  return copy;
}

/**
 * Hides the password inside a connection URL, in its user-info part
 * (`postgres://user:secret@host/db`) and in a `password=` query parameter. A value that is not a
 * URL but mentions a password is hidden whole.
 */
export function redactUrlPassword(url: string): string {
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(url);
  if (!scheme) return /password/i.test(url) ? REDACTED : url;
  const head = scheme[0];
  let rest = url.slice(head.length);
  // The last '@' before the query ends the user-info, even when the password holds an
  // unescaped '@' or '/'; people paste such URLs.
  const queryAt = rest.search(/[?#]/);
  const beforeQuery = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const at = beforeQuery.lastIndexOf('@');
  if (at >= 0) {
    const userInfo = beforeQuery.slice(0, at);
    const colon = userInfo.indexOf(':');
    if (colon >= 0) rest = `${userInfo.slice(0, colon)}:${REDACTED}${rest.slice(at)}`;
  }
  rest = rest.replace(/([?&;](?:ssl)?password=)[^&;#]*/gi, `$1${REDACTED}`);
  return head + rest;
}

/** What the configuration endpoint and the Settings page show: values redacted, with sources. */
export function configView(
  loaded: Pick<LoadedConfig, 'config' | 'sources' | 'files' | 'warnings'>,
): {
  config: BtyWebConfig;
  sources: Record<ConfigKey, ConfigSource>;
  files: string[];
  warnings: string[];
} {
  return {
    config: redactConfig(loaded.config),
    sources: { ...loaded.sources },
    files: [...loaded.files],
    warnings: [...loaded.warnings],
  };
}

/** `configView` as pretty-printed JSON. */
export function renderConfigJson(
  loaded: Pick<LoadedConfig, 'config' | 'sources' | 'files' | 'warnings'>,
): string {
  return `${JSON.stringify(configView(loaded), null, 2)}\n`;
}

export interface ResolvedPaths {
  stateDir: string;
  /** The embedded SQLite database (used when `[database] url` is empty). */
  stateDb: string;
  sessionSecretFile: string;
  bootDir: string;
  backupDir: string;
  catalogFile: string;
  tftpRoot: string;
  cacheDir: string;
}

/** Fills the path settings whose empty value means "a folder under the state dir". */
export function resolvePaths(config: BtyWebConfig): ResolvedPaths {
  const stateDir = config.paths.state_dir;
  return {
    stateDir,
    stateDb: join(stateDir, 'state.db'),
    sessionSecretFile: join(stateDir, 'session-secret'),
    bootDir: config.paths.boot_dir || join(stateDir, 'boot'),
    backupDir: config.paths.backup_dir || join(stateDir, 'backups'),
    catalogFile: config.paths.catalog_file || join(stateDir, 'catalog.toml'),
    tftpRoot: config.tftp.root || join(stateDir, 'tftp'),
    cacheDir: config.cache.dir || join(stateDir, 'cache'),
  };
}

// --- loading -------------------------------------------------------------------------------

function schemaFields(): [string, string, ConfigField][] {
  const out: [string, string, ConfigField][] = [];
  for (const [section, fields] of Object.entries(CONFIG_SCHEMA)) {
    for (const [key, field] of Object.entries(fields as Record<string, ConfigField>)) {
      out.push([section, key, field]);
    }
  }
  return out;
}

function fieldOf(section: string, key: string): ConfigField | undefined {
  if (!Object.hasOwn(CONFIG_SCHEMA, section)) return undefined;
  const fields = CONFIG_SCHEMA[section as ConfigSection] as Record<string, ConfigField>;
  return Object.hasOwn(fields, key) ? fields[key] : undefined;
}

/** A file stands for itself, a folder for its `*.toml` files by name; missing: nothing. */
async function expandCandidate(path: string, warnings: string[]): Promise<string[]> {
  const info = await statOrMissing(path);
  if (info === undefined) return [];
  if (info.isFile()) return [path];
  if (!info.isDirectory()) {
    warnings.push(`${path}: neither a file nor a folder; skipped`);
    return [];
  }
  let names: string[];
  try {
    names = await readdir(path);
  } catch (err) {
    if (isMissing(err)) return [];
    throw cannotRead(path, err);
  }
  const files: string[] = [];
  for (const name of names.filter((n) => n.endsWith('.toml') && !n.startsWith('.')).sort()) {
    const file = join(path, name);
    if ((await statOrMissing(file))?.isFile()) files.push(file);
  }
  return files;
}

async function statOrMissing(path: string): Promise<Awaited<ReturnType<typeof stat>> | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw cannotRead(path, err);
  }
}

/** The parsed document; undefined when the file vanished between listing and reading. */
async function readTomlFile(file: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw cannotRead(file, err);
  }
  try {
    // Integers as bigint keep `8080` (integer) apart from `8080.0` (float) and never round.
    return parseToml(text, { integersAsBigInt: true });
  } catch (err) {
    throw invalid(`${file}: not valid TOML: ${describeTomlError(err)}`, {
      cause: err,
      details: { file },
    });
  }
}

function applyToml(
  file: string,
  doc: Record<string, unknown>,
  set: (section: string, key: string, value: Value, source: ConfigSource) => void,
  warnings: string[],
): void {
  for (const [section, body] of Object.entries(doc)) {
    if (!Object.hasOwn(CONFIG_SCHEMA, section)) {
      warnings.push(
        isTable(body)
          ? `${file}: unknown section [${section}] ignored`
          : `${file}: unknown top-level key ${section} ignored`,
      );
      continue;
    }
    if (!isTable(body)) {
      throw invalid(`${file}: [${section}] must be a table, got ${describeTomlValue(body)}`, {
        details: { file, section },
      });
    }
    for (const [key, raw] of Object.entries(body)) {
      const field = fieldOf(section, key);
      if (!field) {
        warnings.push(`${file}: unknown key ${key} in [${section}] ignored`);
        continue;
      }
      const where: Origin = {
        label: `${file}: [${section}] ${key}`,
        details: { file, section, key },
      };
      set(section, key, fromToml(field, raw, where, warnings), `toml:${file}`);
    }
  }
}

function fromToml(field: ConfigField, raw: unknown, where: Origin, warnings: string[]): Value {
  const wrongType = (): BtyError =>
    invalid(`${where.label} must be ${expected(field)}, got ${describeTomlValue(raw)}`, {
      details: { ...where.details, expected: field.kind },
    });
  switch (field.kind) {
    case 'string':
      if (typeof raw !== 'string') throw wrongType();
      return checkString(field, raw, where);
    case 'bool':
      if (typeof raw !== 'boolean') throw wrongType();
      return raw;
    case 'int':
      if (typeof raw !== 'bigint') throw wrongType();
      return checkRange(field, raw, where, warnings);
  }
}

/** Where a value came from: `label` starts error messages, `details` goes into the error. */
interface Origin {
  label: string;
  details: Record<string, unknown>;
}

/** Environment variables (and command-line strings): integers and booleans are parsed. */
function fromText(field: ConfigField, raw: string, where: Origin, warnings: string[]): Value {
  const bad = (): BtyError =>
    invalid(`${where.label} must be ${expected(field, true)}, got ${JSON.stringify(raw)}`, {
      details: { ...where.details, expected: field.kind, value: raw },
    });
  switch (field.kind) {
    case 'string':
      return checkString(field, raw, where);
    case 'bool': {
      const word = raw.trim().toLowerCase();
      if (TRUE_WORDS.includes(word)) return true;
      if (FALSE_WORDS.includes(word)) return false;
      throw bad();
    }
    case 'int': {
      const text = raw.trim();
      if (!/^[+-]?[0-9]+$/.test(text)) throw bad();
      return checkRange(field, BigInt(text), where, warnings);
    }
  }
}

/** Values already typed by the caller (command-line overrides). */
function fromValue(field: ConfigField, raw: unknown, where: Origin, warnings: string[]): Value {
  if (field.kind === 'string' && typeof raw === 'string') return checkString(field, raw, where);
  if (field.kind === 'bool' && typeof raw === 'boolean') return raw;
  if (field.kind === 'int' && typeof raw === 'number' && Number.isInteger(raw)) {
    return checkRange(field, BigInt(raw), where, warnings);
  }
  const shown = typeof raw === 'string' ? JSON.stringify(raw) : String(raw);
  throw invalid(`${where.label} must be ${expected(field)}, got ${shown}`, {
    details: { ...where.details, expected: field.kind },
  });
}

const TRUE_WORDS = ['1', 'true', 'yes', 'on'];
const FALSE_WORDS = ['0', 'false', 'no', 'off'];

function checkString(field: StringField, value: string, where: Origin): string {
  if (field.nonEmpty && value === '') {
    throw invalid(`${where.label} must not be empty`, {
      details: { ...where.details, expected: field.kind },
    });
  }
  if (field.choices && !field.choices.includes(value)) {
    throw invalid(
      `${where.label} must be one of ${field.choices.join(', ')}, got ${JSON.stringify(value)}`,
      {
        details: { ...where.details, expected: field.choices },
      },
    );
  }
  return value;
}

function checkRange(field: IntField, value: bigint, where: Origin, warnings: string[]): number {
  if (value < BigInt(field.min) && field.belowMin !== undefined) {
    const replacement = field.belowMin === 'min' ? field.min : field.default;
    warnings.push(
      `${where.label} = ${value} is below ${field.min}; using ${field.belowMin === 'min' ? 'the minimum' : 'the default'} ${replacement}`,
    );
    return replacement;
  }
  if (value < BigInt(field.min) || value > BigInt(field.max)) {
    throw invalid(`${where.label} must be ${expected(field)}, got ${value}`, {
      details: { ...where.details, expected: field.kind, min: field.min, max: field.max },
    });
  }
  return Number(value);
}

function expected(field: ConfigField, fromText = false): string {
  switch (field.kind) {
    case 'string':
      return field.nonEmpty ? 'a non-empty string' : 'a string';
    case 'bool':
      return fromText ? 'a boolean (true/false, yes/no, on/off, 1/0)' : 'a boolean (true or false)';
    case 'int':
      return field.max === Number.MAX_SAFE_INTEGER
        ? `an integer of at least ${field.min}`
        : `an integer from ${field.min} to ${field.max}`;
  }
}

/** `BTY_SERVER_PROT=…`: a variable shaped like an override that overrides nothing. */
function strayEnvWarnings(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(env)) {
    const match = /^BTY_([A-Z0-9]+)_([A-Z0-9_]+)$/.exec(name);
    if (!match || value === undefined || value === '') continue;
    const section = (match[1] ?? '').toLowerCase();
    const key = (match[2] ?? '').toLowerCase();
    if (Object.hasOwn(CONFIG_SCHEMA, section) && !fieldOf(section, key)) {
      out.push(`environment variable ${name} matches no setting in [${section}]; ignored`);
    }
  }
  return out.sort();
}

function isTable(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
  );
}

function describeTomlValue(value: unknown): string {
  if (typeof value === 'string') return `string ${JSON.stringify(value)}`;
  if (typeof value === 'bigint') return `integer ${value}`;
  if (typeof value === 'number') return `float ${value}`;
  if (typeof value === 'boolean') return `boolean ${value}`;
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return 'a date-time';
  return 'a table';
}

/** smol-toml appends a code frame; keep its first line and the position. */
function describeTomlError(err: unknown): string {
  if (!(err instanceof TomlError)) return err instanceof Error ? err.message : String(err);
  const first = err.message.split('\n', 1)[0] ?? '';
  return `${first.replace(/^Invalid TOML document: /, '')} (at line ${err.line}, column ${err.column})`;
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function cannotRead(path: string, err: unknown): BtyError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return invalid(
    `${path}: cannot read (${code ?? (err instanceof Error ? err.message : String(err))})`,
    {
      cause: err,
      details: { file: path },
    },
  );
}

function invalid(
  message: string,
  options: { cause?: unknown; details?: Record<string, unknown> } = {},
): BtyError {
  return new BtyError('BTY_ERR_CONFIG_INVALID', message, options);
}
