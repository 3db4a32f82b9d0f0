/**
 * The package's entry points (package.json "exports") load from the built dist/ and expose the
 * typed APIs other programs use in-process. `make test` builds before it tests.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  exports: Record<string, string>;
};

describe('package entry points', () => {
  it.each(Object.entries(pkg.exports))('%s loads (%s)', async (_name, target) => {
    const mod = (await import(new URL(`../${target}`, import.meta.url).href)) as Record<
      string,
      unknown
    >;
    expect(Object.keys(mod).length).toBeGreaterThan(0);
  });

  it('exposes the main functions by name', async () => {
    const flash = (await import('../dist/src/flash/index.js')) as Record<string, unknown>;
    const disks = (await import('../dist/src/flash/disks.js')) as Record<string, unknown>;
    const catalog = (await import('../dist/src/catalog/index.js')) as Record<string, unknown>;
    expect(typeof flash.flash).toBe('function');
    expect(typeof flash.inspectImage).toBe('function');
    expect(typeof disks.listDisks).toBe('function');
    expect(typeof catalog.loadCatalog).toBe('function');
    expect(typeof catalog.imageRefForSrc).toBe('function');
  });
});
