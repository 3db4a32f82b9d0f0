import { describe, expect, it } from 'vitest';
import { mergeImageRows } from '../../src/catalog/merge.ts';
import { parseCatalog } from '../../src/catalog/schema.ts';
import type { LocalImage } from '../../src/flash/images.ts';

const SHA = 'c'.repeat(64);

const LOCAL: LocalImage[] = [
  {
    name: 'alpine.img',
    path: '/images/alpine.img',
    format: 'img',
    size_bytes: 3,
    sha256: SHA,
    arch: null,
  },
  {
    name: 'debian-arm64.img.zst',
    path: '/images/debian-arm64.img.zst',
    format: 'img.zst',
    size_bytes: 10,
    sha256: null,
    arch: 'arm64',
  },
];

const CATALOG = parseCatalog(
  `version = 1
[[images]]
name = "one.img.gz"
src = "https://Example.com:443/one.img.gz"
size_bytes = 100
[[images]]
name = "one-again.img.gz"
src = "https://example.com/one.img.gz"
[[images]]
name = "two.qcow2"
src = "oras://ghcr.io/o/two:1"
sha256 = "${SHA}"
[[images]]
name = "odd-1.img"
src = "ftp://h/odd.img"
[[images]]
name = "odd-2.img"
src = "ftp://h/odd.img"
[[images]]
name = "two-again.qcow2"
src = "oras://GHCR.IO/O/TWO:1"
`,
  'c.toml',
);

describe('mergeImageRows', () => {
  it('puts local rows first, keeping their sidecar digest', () => {
    const rows = mergeImageRows(LOCAL, null);
    expect(rows).toEqual([
      {
        name: 'alpine.img',
        format: 'img',
        size_bytes: 3,
        arch: null,
        sha256: SHA,
        source: 'local',
        path: '/images/alpine.img',
        // printf %s 'file://alpine.img' | sha256sum
        ref: 'e88d97f20a5fc4d9dcec95c8bf422efe0619031826541b2e8240c7e3c9151aac',
      },
      expect.objectContaining({ name: 'debian-arm64.img.zst', source: 'local', sha256: null }),
    ]);
  });

  it('appends catalog rows in catalog order, dropping repeated refs (first wins)', () => {
    const rows = mergeImageRows(LOCAL, CATALOG);
    expect(rows.map((r) => [r.name, r.source])).toEqual([
      ['alpine.img', 'local'],
      ['debian-arm64.img.zst', 'local'],
      ['one.img.gz', 'catalog'],
      ['two.qcow2', 'catalog'],
      ['odd-1.img', 'catalog'],
      ['odd-2.img', 'catalog'], // no ref: kept, never deduped
    ]);
    expect(rows[2]).toEqual({
      name: 'one.img.gz',
      format: 'img.gz',
      size_bytes: 100,
      arch: null,
      sha256: null,
      source: 'catalog',
      url: 'https://Example.com:443/one.img.gz',
      ref: CATALOG.entries[0]?.ref,
    });
    expect(rows[3]?.sha256).toBe(SHA);
    expect(rows[4]?.ref).toBeNull();
  });

  it('accepts a bare entry list', () => {
    expect(mergeImageRows([], CATALOG.entries)).toHaveLength(4);
  });
});
