/** `bty catalog check SOURCE`: load and validate a catalog the way the wizard would. */
import { EXIT } from '../core/errors.ts';
import { isImageFormat, SUPPORTED_SUFFIXES_TEXT } from '../core/formats.ts';
import { reprString } from '../core/python-repr.ts';
import { loadCatalog } from '../catalog/load.ts';
import type { Catalog } from '../catalog/schema.ts';
import { action, type Register } from './command.ts';
import { formatBytes, printJson, renderTable, type CliIO } from './output.ts';

interface CheckOptions {
  json?: boolean;
}

export interface CatalogWarning {
  name: string;
  message: string;
}

export const registerCatalog: Register = (program, io, setExit) => {
  const catalog = program
    .command('catalog')
    .description('work with image catalogs (TOML, version = 1)');

  catalog
    .command('check')
    .description(
      'load and validate a catalog from a local path, file://, http:// or https:// ' +
        '(the same checks the wizard applies)',
    )
    .argument('<source>', 'catalog path, http(s):// URL or oras:// reference')
    .option('--json', 'print one JSON document instead of a table')
    .action(
      action(
        io,
        setExit,
        ([, options]: [string, CheckOptions]) => Boolean(options.json),
        async (source: string, options: CheckOptions) => {
          const loaded = await loadCatalog(source);
          const warnings = catalogWarnings(loaded);
          if (options.json) {
            printJson(io, {
              ok: true,
              source: loaded.source,
              version: loaded.version,
              entries: loaded.entries,
              warnings,
            });
          } else {
            printCheck(io, loaded, warnings);
          }
          return EXIT.ok;
        },
      ),
    );
};

/** Entries the catalog accepts but bty cannot use as they are: worth a word, not a refusal. */
export function catalogWarnings(catalog: Catalog): CatalogWarning[] {
  const warnings: CatalogWarning[] = [];
  for (const entry of catalog.entries) {
    if (entry.format === null && /^oras:\/\//i.test(entry.src)) {
      // An OCI layer usually names its file: the format is known once the reference resolves.
      continue;
    }
    if (entry.format === null) {
      warnings.push({
        name: entry.name,
        message:
          `format unknown: the name has no supported suffix (${SUPPORTED_SUFFIXES_TEXT}) ` +
          `and no format is set; bty cannot flash it`,
      });
    } else if (!isImageFormat(entry.format)) {
      warnings.push({
        name: entry.name,
        message: `format ${reprString(entry.format)} is not one bty can flash`,
      });
    }
    if (entry.ref === null) {
      warnings.push({
        name: entry.name,
        message: `src ${reprString(entry.src)} cannot be canonicalised (no ref); use oras://, http:// or https://`,
      });
    }
  }
  return warnings;
}

function printCheck(io: CliIO, catalog: Catalog, warnings: CatalogWarning[]): void {
  if (catalog.entries.length > 0) {
    io.out(
      renderTable(
        ['NAME', 'FORMAT', 'SIZE', 'ARCH', 'SHA256', 'REF', 'SRC'],
        catalog.entries.map((e) => [
          e.name,
          e.format ?? '-',
          e.size_bytes === null ? '-' : formatBytes(e.size_bytes),
          e.arch ?? '-',
          e.sha256?.slice(0, 12) ?? '-',
          e.ref?.slice(0, 12) ?? '-',
          e.src,
        ]),
      ),
    );
  }
  for (const w of warnings) io.err(`bty: warning: catalog entry '${w.name}': ${w.message}\n`);
  io.out(`catalog OK: ${catalog.entries.length} image(s) from ${catalog.source}\n`);
}
