/**
 * `bty-web`: the PXE control plane server.
 *
 *   bty-web [--config PATH]... [--host HOST] [--port PORT]   serve
 *   bty-web migrate [--config PATH]...                       apply database migrations, exit
 *   bty-web export DIR [--force] [--config PATH]...          write a bundle (src/web/bundle.ts)
 *   bty-web import DIR [--config PATH]...                    load a bundle, all or nothing
 *   bty-web --version
 *
 * Configuration: see src/web/config.ts (bty.toml search order, drop-ins, BTY_<SECTION>_<KEY>).
 */
import { parseArgs } from 'node:util';
import { BtyError, EXIT, isBtyError, type ExitCode } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import { buildApp } from './app.ts';
import { exportBundle, importBundle } from './bundle.ts';
import { loadConfig, resolvePaths, type ConfigOverrides } from './config.ts';
import { readFile } from 'node:fs/promises';
import { parseCatalog } from '../catalog/schema.ts';
import { listCatalogEntries, mergeCatalogEntries } from './db/catalog.ts';
import { migrate, openDatabase, type BtyDatabase } from './db/database.ts';
import { fromCatalogEntry } from './routes/catalog.ts';
import { createSessions, resolveSessionSecret } from './session.ts';

const USAGE = `usage: bty-web [--config PATH]... [--host HOST] [--port PORT]
       bty-web migrate [--config PATH]...
       bty-web export DIR [--force] [--config PATH]...
       bty-web import DIR [--config PATH]...
       bty-web --version

--config PATH   a bty.toml or a drop-in folder of *.toml (repeatable; replaces the search list)
--host HOST     listen address (default from [server] host)
--port PORT     listen port (default from [server] port)

export DIR      write the database as a bundle into DIR (new or empty): inventory.json (upstream's
                format v3) plus machines.json, catalog.json and settings.json
--force         with export: replace DIR even when it is not empty
import DIR      load a bundle (all or nothing); machines in it replace those of the same MAC
`;

export interface WebIO {
  out: (text: string) => void;
  err: (text: string) => void;
}

const processIO: WebIO = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

/** Runs bty-web; resolves with the exit code once the server has stopped (or failed to start). */
export async function main(
  argv: string[],
  io: WebIO = processIO,
  signals: { onStop?: (stop: () => void) => void } = {},
): Promise<ExitCode> {
  let values: {
    config?: string[];
    host?: string;
    port?: string;
    version?: boolean;
    help?: boolean;
    force?: boolean;
  };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', multiple: true },
        host: { type: 'string' },
        port: { type: 'string' },
        version: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        force: { type: 'boolean' },
      },
    }));
  } catch (err) {
    io.err(`bty-web: ${(err as Error).message}\n${USAGE}`);
    return EXIT.usage;
  }
  if (values.help) {
    io.out(USAGE);
    return EXIT.ok;
  }
  if (values.version) {
    io.out(`bty-web ${VERSION}\n`);
    return EXIT.ok;
  }
  const command = positionals[0] ?? 'serve';
  const takesDir = command === 'export' || command === 'import';
  if (!['serve', 'migrate', 'export', 'import'].includes(command)) {
    io.err(`bty-web: unknown command: ${positionals.join(' ')}\n${USAGE}`);
    return EXIT.usage;
  }
  if (takesDir ? positionals.length !== 2 : positionals.length > 1) {
    io.err(
      takesDir
        ? `bty-web: ${command} needs exactly one folder: bty-web ${command} DIR\n${USAGE}`
        : `bty-web: unknown command: ${positionals.join(' ')}\n${USAGE}`,
    );
    return EXIT.usage;
  }
  const bundleDir = takesDir ? positionals[1]! : '';
  if (values.force && command !== 'export') {
    io.err(`bty-web: --force goes with export only\n${USAGE}`);
    return EXIT.usage;
  }
  if (takesDir && (values.host !== undefined || values.port !== undefined)) {
    io.err(`bty-web: --host and --port go with serving only\n${USAGE}`);
    return EXIT.usage;
  }
  try {
    const overrides: ConfigOverrides = {
      server: {
        ...(values.host !== undefined ? { host: values.host } : {}),
        ...(values.port !== undefined ? { port: values.port } : {}),
      },
    };
    const loaded = await loadConfig({ configPaths: values.config ?? [], overrides });
    for (const w of loaded.warnings) io.err(`bty-web: warning: ${w}\n`);
    const { config } = loaded;
    const paths = resolvePaths(config);
    const database = await openDatabase({ url: config.database.url, sqlitePath: paths.stateDb });
    try {
      const applied = await migrate(database);
      if (applied.length > 0) {
        io.err(`bty-web: database ${database.location}: applied ${applied.join(', ')}\n`);
      }
      if (command === 'migrate') {
        if (applied.length === 0) io.out(`database ${database.location} is up to date\n`);
        return EXIT.ok;
      }
      if (command === 'export') {
        const result = await exportBundle(database.db, bundleDir, { force: values.force ?? false });
        io.out(`bty-web export -> ${bundleDir}: ${result.machines} machines\n`);
        return EXIT.ok;
      }
      if (command === 'import') {
        const result = await importBundle(database.db, bundleDir);
        const extra = [
          ...(result.catalog === null
            ? []
            : [
                `${result.catalog.added + result.catalog.updated + result.catalog.unchanged} ` +
                  `catalog entries (${result.catalog.added} added, ${result.catalog.updated} ` +
                  `updated, ${result.catalog.unchanged} unchanged)`,
              ]),
          ...(result.settings === null ? [] : [`${result.settings} settings`]),
        ];
        io.out(
          `bty-web import: ${result.machines} machines ` +
            (result.withRecords ? '(with their records)' : '(as bty-inventory)') +
            extra.map((e) => `, ${e}`).join('') +
            '\n',
        );
        for (const line of result.skipped) io.err(`  skipped: ${line}\n`);
        return EXIT.ok;
      }
      await seedCatalog(database, paths.catalogFile, io);
      // Upstream's rule: an empty password means the public default `bty-lab`.
      const effective = config.admin.password.trim() || 'bty-lab';
      if (effective === 'bty-lab') {
        io.err(
          'bty-web: warning: the admin password is the default (bty-lab); set [admin] password ' +
            'or BTY_ADMIN_PASSWORD\n',
        );
      }
      const secret = await resolveSessionSecret(config.server.session_secret, paths.stateDir);
      const app = await buildApp({
        database,
        version: VERSION,
        artifactVersion: VERSION,
        bootDir: paths.bootDir,
        trustedProxy: config.server.trusted_proxy,
        sessions: createSessions(secret, config.admin.password),
        config: loaded,
      });
      await app.listen({ host: config.server.host, port: config.server.port });
      const address = app.server.address();
      const where =
        typeof address === 'object' && address !== null
          ? `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
          : String(address);
      io.err(`bty-web ${VERSION} listening on http://${where} (state in ${paths.stateDir})\n`);
      const port = config.server.port;
      io.err(
        `bty-web: point PXE clients at http://<this host>:${port}/pxe-bootstrap.ipxe\n` +
          `bty-web: operator API: http://localhost:${port}/openapi.json (log in with ` +
          `POST /ui/login; docs/http-api.md walks through it)\n`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        if (signals.onStop) signals.onStop(stop);
        else {
          process.once('SIGTERM', stop);
          process.once('SIGINT', stop);
        }
      });
      io.err('bty-web: stopping\n');
      await app.close();
      return EXIT.ok;
    } finally {
      await database.close();
    }
  } catch (err) {
    if (isBtyError(err)) {
      io.err(`bty-web: ${err.code}: ${err.message}\n`);
      if (err.hint) io.err(`hint: ${err.hint}\n`);
      return err.exitCode;
    }
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      io.err(`bty-web: ${(err as Error).message}: another server holds that address\n`);
      return EXIT.failure;
    }
    throw err;
  }
}

/**
 * Upstream kept its catalog in `[paths] catalog_file` (`<state>/catalog.toml`); bty-web keeps
 * it in the database. While the database's catalog is empty, that file (when there is one) is
 * imported at start: an upgrade from upstream keeps its catalog, and `make run` points the
 * setting at a small demo catalog. Once the catalog has entries the file is never read again.
 */
async function seedCatalog(database: BtyDatabase, file: string, io: WebIO): Promise<void> {
  if ((await listCatalogEntries(database.db)).length > 0) return;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch {
    return; // No file: nothing to seed.
  }
  const entries = parseCatalog(bytes, file).entries.map(fromCatalogEntry);
  const result = await mergeCatalogEntries(database.db, entries, new Date(), (plan) => ({
    kind: 'catalog.imported',
    summary: `catalog seeded from ${file}: ${plan.added.length} entries`,
    subjectKind: 'catalog',
    actor: 'system',
    details: { source: file, entries: entries.length, added: plan.added.length },
  }));
  if (!result.ok) {
    throw new BtyError(
      'BTY_ERR_CATALOG_INVALID',
      `catalog ${file} cannot be imported: ${result.reason}`,
    );
  }
  io.err(`bty-web: catalog seeded from ${file} (${entries.length} entries)\n`);
}
