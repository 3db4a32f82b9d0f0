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
import { copyMissing, IPXE_BOOT_FILES, IPXE_DIR } from './netboot-files.ts';
import { startTftpServer, type TftpServer } from '../tftp/index.ts';
import { cacheMain } from '../cache/cli.ts';

const USAGE = `usage: bty-web [--config PATH]... [--host HOST] [--port PORT]
       bty-web migrate [--config PATH]...
       bty-web export DIR [--force] [--config PATH]...
       bty-web import DIR [--config PATH]...
       bty-web cache fetch|list|serve|remove ... [--dir DIR]   the artifact cache on its own
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
  if (argv[0] === 'cache') return cacheCommand(argv.slice(1), io);
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
      if (config.boot.seed_dir) {
        const seeded = await copyMissing(config.boot.seed_dir, paths.bootDir);
        if (seeded.length > 0) {
          io.err(
            `bty-web: boot folder seeded from ${config.boot.seed_dir}: ${seeded.join(', ')}\n`,
          );
        }
      }
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
      let tftp: TftpServer | null = null;
      if (config.tftp.enabled) {
        try {
          tftp = await startBuiltInTftp(config.tftp, paths.tftpRoot, io);
        } catch (err) {
          await app.close();
          throw err;
        }
      }
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
      await tftp?.close();
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
 * `bty-web cache …`: the artifact cache without the server (src/cache/cli.ts): pre-fill it,
 * list it, serve it on its own, remove entries. The folder defaults to the configured one
 * (`[cache] dir`, else `<state_dir>/cache`), so it works on the server's own cache.
 */
async function cacheCommand(argv: string[], io: WebIO): Promise<ExitCode> {
  const wantsHelp = argv.length === 0 || argv.includes('--help') || argv.includes('-h');
  const hasDir = argv.some((a) => a === '--dir' || a.startsWith('--dir='));
  let args = argv;
  if (!hasDir && !wantsHelp) {
    try {
      const loaded = await loadConfig({});
      args = [...argv, '--dir', resolvePaths(loaded.config).cacheDir];
    } catch (err) {
      if (!isBtyError(err)) throw err;
      io.err(`bty-web: ${err.code}: ${err.message}\n`);
      return err.exitCode;
    }
  }
  const code = await cacheMain(args, { ...io, isTTY: false });
  return code as ExitCode;
}

/**
 * The TFTP server `[tftp] enabled` asks for, serving `root`, which gets the iPXE boot files of
 * Debian's `ipxe` package when it lacks them (a file already there is never replaced). A port
 * it cannot bind is an error naming the usual culprits.
 */
async function startBuiltInTftp(
  settings: { host: string; port: number },
  root: string,
  io: WebIO,
): Promise<TftpServer> {
  const copied = await copyMissing(IPXE_DIR, root, IPXE_BOOT_FILES);
  if (copied.length > 0) io.err(`bty-web: TFTP root ${root}: copied ${copied.join(', ')}\n`);
  try {
    const server = await startTftpServer({
      root,
      host: settings.host,
      port: settings.port,
      log: (line) => io.err(`bty-web: tftp: ${line}\n`),
    });
    const at = server.address();
    io.err(`bty-web: TFTP serving ${root} on ${at.address}:${at.port} (udp)\n`);
    return server;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      throw new BtyError(
        'BTY_ERR_CONFIG_INVALID',
        `[tftp] cannot listen on ${settings.host}:${settings.port} (udp): ` +
          (code === 'EADDRINUSE'
            ? 'another TFTP server holds it (tftpd-hpa, or dnsmasq with enable-tftp)'
            : 'port below 1024 needs root'),
        { hint: 'stop the other server, set [tftp] port, or set [tftp] enabled = false' },
      );
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
