/**
 * `GET /static/<name>`: the UI's stylesheets, fonts and scripts, served by bty-web itself from
 * the installed npm packages and the repository's `assets/ui/` (no CDN, so the console works on
 * an isolated provisioning network). A fixed list: nothing else on disk is reachable. Files are
 * read once and kept in memory with an ETag, so a reload costs a 304.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { detail } from '../context.ts';

/** The repository (or installed package) root: the folder holding `assets/ui`. */
function packageRoot(): string {
  let dir = import.meta.dirname;
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'assets', 'ui'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('bty-web: assets/ui not found above ' + import.meta.dirname);
}

const require = createRequire(import.meta.url);
const fromPackage = (pkg: string, file: string) =>
  join(dirname(require.resolve(`${pkg}/package.json`)), file);

interface Asset {
  path: string;
  type: string;
}

function assetTable(): Map<string, Asset> {
  const own = join(packageRoot(), 'assets', 'ui');
  const css = 'text/css; charset=utf-8';
  const js = 'text/javascript; charset=utf-8';
  return new Map<string, Asset>([
    [
      'bootstrap.min.css',
      { path: fromPackage('bootstrap', 'dist/css/bootstrap.min.css'), type: css },
    ],
    [
      'bootstrap-icons.min.css',
      { path: fromPackage('bootstrap-icons', 'font/bootstrap-icons.min.css'), type: css },
    ],
    [
      'fonts/bootstrap-icons.woff2',
      {
        path: fromPackage('bootstrap-icons', 'font/fonts/bootstrap-icons.woff2'),
        type: 'font/woff2',
      },
    ],
    [
      'fonts/bootstrap-icons.woff',
      {
        path: fromPackage('bootstrap-icons', 'font/fonts/bootstrap-icons.woff'),
        type: 'font/woff',
      },
    ],
    ['htmx.min.js', { path: fromPackage('htmx.org', 'dist/htmx.min.js'), type: js }],
    ['htmx-sse.js', { path: fromPackage('htmx-ext-sse', 'sse.js'), type: js }],
    ['bty.css', { path: join(own, 'bty.css'), type: css }],
    ['bty.js', { path: join(own, 'bty.js'), type: js }],
    ['bty-theme.js', { path: join(own, 'bty-theme.js'), type: js }],
    ['favicon.svg', { path: join(own, 'favicon.svg'), type: 'image/svg+xml' }],
  ]);
}

/** The names `/static/` serves (tests walk them). */
export const STATIC_NAMES = [...assetTable().keys()];

export function registerStaticAssets(app: FastifyInstance): void {
  const table = assetTable();
  const loaded = new Map<string, { body: Buffer; etag: string }>();
  app.get<{ Params: { '*': string } }>(
    '/static/*',
    { schema: { hide: true } },
    async (req, reply) => {
      const name = req.params['*'];
      const asset = table.get(name);
      if (!asset) return detail(reply, 404, `no static file '${name.slice(0, 100)}'`);
      let file = loaded.get(name);
      if (!file) {
        const body = await readFile(asset.path);
        file = {
          body,
          etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
        };
        loaded.set(name, file);
      }
      reply
        .header('etag', file.etag)
        .header('cache-control', 'public, max-age=300')
        .header('x-content-type-options', 'nosniff');
      if (req.headers['if-none-match'] === file.etag) return reply.code(304).send();
      return reply.type(asset.type).send(file.body);
    },
  );
}
