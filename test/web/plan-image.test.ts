import { describe, expect, it } from 'vitest';
import { blobToken } from '../../src/cache/url.ts';
import { cacheable, digestHex, planImage } from '../../src/web/plan-image.ts';
import { withcacheBase, withcacheCatalogToml } from '../../src/web/withcache.ts';
import { parseCatalog } from '../../src/catalog/schema.ts';

const SHA = 'ab'.repeat(32);
const SRC = 'https://images.example/os/debian.img.zst';
const here = { host: '10.0.0.5:8080', withcacheBase: '', mode: 'pull-through' as const };

describe('planImage', () => {
  it('pull-through: the cache URL on the Host the machine used, even before the first fill', () => {
    expect(planImage({ src: SRC, sha256: SHA }, { ...here, cached: null })).toEqual({
      url: `http://10.0.0.5:8080/b/${blobToken(SRC)}/debian.img.zst`,
      served_from: 'cache',
      hit: false,
      sha256: SHA,
    });
  });

  it('curated: the cache only when the image is cached, else the origin', () => {
    const curated = { ...here, mode: 'curated' as const };
    expect(planImage({ src: SRC, sha256: SHA }, { ...curated, cached: null })).toEqual({
      url: SRC,
      served_from: 'origin',
      hit: false,
      sha256: SHA,
    });
    const hit = planImage(
      { src: SRC, sha256: SHA },
      { ...curated, cached: { digest: `sha256:${SHA}` } },
    );
    expect(hit.served_from).toBe('cache');
    expect(hit.hit).toBe(true);
  });

  it("the cache's digest when the catalog has none; the catalog's wins otherwise", () => {
    const other = 'cd'.repeat(32);
    const cached = { digest: `sha256:${other.toUpperCase()}` };
    expect(planImage({ src: SRC, sha256: null }, { ...here, cached }).sha256).toBe(other);
    expect(planImage({ src: SRC, sha256: SHA }, { ...here, cached }).sha256).toBe(SHA);
  });

  it("withcache configured: its serve URL, byte-exact with withcache's", () => {
    const oras = 'oras://ghcr.io/owner/repo:tag';
    const plan = planImage(
      { src: oras, sha256: SHA },
      { ...here, withcacheBase: 'http://cache.lan:8081', cached: { digest: `sha256:${SHA}` } },
    );
    expect(plan.url).toBe(`http://cache.lan:8081/b/${blobToken(oras)}/repo%3Atag`);
    expect(plan.served_from).toBe('withcache');
    expect(plan.hit).toBe(true);
  });

  it('file:// sources stay as they are (the live environment reads them itself)', () => {
    expect(planImage({ src: 'file://x.img', sha256: null }, { ...here, cached: null })).toEqual({
      url: 'file://x.img',
      served_from: 'origin',
      hit: null,
      sha256: null,
    });
    expect(cacheable('HTTPS://X/y')).toBe(true);
    expect(cacheable('file:///y')).toBe(false);
  });

  it('digestHex takes sha256:<hex> or <hex>, nothing else', () => {
    expect(digestHex(`sha256:${SHA}`)).toBe(SHA);
    expect(digestHex(SHA.toUpperCase())).toBe(SHA);
    expect(digestHex('md5:abc')).toBeNull();
    expect(digestHex(null)).toBeNull();
  });
});

describe('withcache', () => {
  it('normalises the base URL as upstream does', () => {
    expect(withcacheBase('  cache.lan:8081/ ')).toBe('http://cache.lan:8081');
    expect(withcacheBase('https://c.example//')).toBe('https://c.example');
    expect(withcacheBase('  ')).toBe('');
  });

  it('turns its /catalog listing into a catalog bty reads, skipping entries it cannot use', () => {
    const body = JSON.stringify({
      url: 'http://cache.lan:8081',
      entries: [
        {
          name: 'debian "13"',
          src: SRC,
          sha256: SHA,
          size_bytes: 123,
          format: 'raw.zst',
          description: 'line\nbreak',
        },
        { name: 'no src' },
        { src: 'https://x/y.img' },
        'junk',
      ],
    });
    const catalog = parseCatalog(withcacheCatalogToml(body, 'http://cache.lan:8081/catalog'), 'x');
    expect(catalog.entries).toHaveLength(1);
    expect(catalog.entries[0]).toMatchObject({
      name: 'debian "13"',
      src: SRC,
      sha256: SHA,
      size_bytes: 123,
      description: 'line\nbreak',
    });
  });

  it('says what is wrong with something that is not a withcache listing', () => {
    expect(() => withcacheCatalogToml('<html>', 'u')).toThrow(/not JSON/);
    expect(() => withcacheCatalogToml('{"x":1}', 'u')).toThrow(/no "entries" list/);
  });
});
