import { describe, expect, it } from 'vitest';
import { isBtyError } from '../../src/core/errors.ts';
import { parseCatalog } from '../../src/catalog/schema.ts';

const SHA = 'a'.repeat(64);
// printf %s 'https://example.com/x/debian-x86_64.img.zst' | sha256sum
const HTTP_REF = 'ac43070c0e54f2572844ca47dba6a94f90866d078c955048ff3094514c07e79c';
// printf %s 'oras://ghcr.io/safl/nosi/debian:latest' | sha256sum
const ORAS_REF = 'a716406517b607986f247c70f8a240b67bb131dbcd010057da611e39739d2f19';

function refusal(toml: string | Uint8Array, source = 'test.toml'): Error {
  try {
    parseCatalog(toml, source);
  } catch (err) {
    expect(isBtyError(err, 'BTY_ERR_CATALOG_INVALID')).toBe(true);
    const message = (err as Error).message;
    // Operator-facing vocabulary: the file is a catalog (a "manifest" is a sha256 sidecar).
    expect(message).toContain('catalog');
    expect(message).not.toContain('manifest');
    return err as Error;
  }
  throw new Error('expected the catalog to be refused');
}

describe('parseCatalog: accepted catalogs', () => {
  it('reads a version-only document as an empty catalog', () => {
    expect(parseCatalog('version = 1\n', 'a.toml')).toEqual({
      version: 1,
      source: 'a.toml',
      entries: [],
    });
  });

  it('fills defaults, normalises sha256 and computes the ref', () => {
    const catalog = parseCatalog(
      `version = 1
[[images]]
name = "debian-x86_64.img.zst"
src = "https://example.com/x/debian-x86_64.img.zst"
sha256 = "  ${SHA.toUpperCase()}\t"
size_bytes = 1234
description = "Debian"
unknown_key = "ignored"

[[images]]
name = "nosi-aarch64.qcow2"
src = "oras://ghcr.io/safl/nosi/debian:latest"
`,
      'c.toml',
    );
    expect(catalog.entries).toEqual([
      {
        name: 'debian-x86_64.img.zst',
        src: 'https://example.com/x/debian-x86_64.img.zst',
        sha256: SHA,
        format: 'img.zst',
        size_bytes: 1234,
        description: 'Debian',
        arch: 'x86_64',
        ref: HTTP_REF,
      },
      {
        name: 'nosi-aarch64.qcow2',
        src: 'oras://ghcr.io/safl/nosi/debian:latest',
        sha256: null,
        format: 'qcow2',
        size_bytes: null,
        description: null,
        arch: 'arm64',
        ref: ORAS_REF,
      },
    ]);
  });

  it('lets an explicit format and arch beat the name heuristics (format is not validated)', () => {
    const [entry] = parseCatalog(
      `version = 1
[[images]]
name = "thing-x86_64.img.gz"
src = "https://h/blob"
format = "iso"
arch = "riscv64"
`,
      's',
    ).entries;
    expect(entry?.format).toBe('iso');
    expect(entry?.arch).toBe('riscv64');
  });

  it('treats an empty format or arch as absent', () => {
    const [entry] = parseCatalog(
      `version = 1
[[images]]
name = "a-amd64.img"
src = "https://h/a"
format = ""
arch = ""
`,
      's',
    ).entries;
    expect(entry?.format).toBe('img');
    expect(entry?.arch).toBe('x86_64');
  });

  it('leaves format null when the name has no known suffix', () => {
    const [entry] = parseCatalog(
      'version = 1\n[[images]]\nname = "x.iso"\nsrc = "https://h/x.iso"\n',
      's',
    ).entries;
    expect(entry?.format).toBeNull();
  });

  it('accepts version = 1.0 (Python equality)', () => {
    expect(parseCatalog('version = 1.0\n', 's').entries).toEqual([]);
  });

  it('coerces name and src to strings, as upstream does', () => {
    const [entry] = parseCatalog(
      'version = 1\n[[images]]\nname = 5\nsrc = "https://h/5.img"\n',
      's',
    ).entries;
    expect(entry?.name).toBe('5');
  });

  it('accepts bytes and decodes them as UTF-8', () => {
    const bytes = new TextEncoder().encode(
      'version = 1\n[[images]]\nname = "ü.img"\nsrc = "https://h/u.img"\n',
    );
    expect(parseCatalog(bytes, 's').entries[0]?.name).toBe('ü.img');
  });

  it('does not require a sha256 for oras or http sources', () => {
    const catalog = parseCatalog(
      `version = 1
[[images]]
name = "a.img"
src = "oras://ghcr.io/o/a:1"
[[images]]
name = "b.img"
src = "http://h/b.img"
`,
      's',
    );
    expect(catalog.entries.map((e) => e.sha256)).toEqual([null, null]);
  });

  it('loads an entry whose src scheme bty cannot fetch, with a null ref', () => {
    const [entry] = parseCatalog(
      'version = 1\n[[images]]\nname = "a.img"\nsrc = "ftp://h/a.img"\n',
      's',
    ).entries;
    expect(entry?.src).toBe('ftp://h/a.img');
    expect(entry?.ref).toBeNull();
  });

  it('accepts a supplied ref equal to the computed one (trimmed, any case)', () => {
    const [entry] = parseCatalog(
      `version = 1
[[images]]
name = "debian-x86_64.img.zst"
src = "https://EXAMPLE.com:443/x/debian-x86_64.img.zst"
ref = " ${HTTP_REF.toUpperCase()} "
`,
      's',
    ).entries;
    expect(entry?.ref).toBe(HTTP_REF);
  });

  it.each([
    ['1.9', 1],
    ['true', 1],
    ['"  42 "', 42],
    ['"1_000"', 1000],
    ['"-5"', -5],
    ['0', 0],
  ])('coerces size_bytes = %s like int()', (value, expected) => {
    const [entry] = parseCatalog(
      `version = 1\n[[images]]\nname = "a.img"\nsrc = "https://h/a"\nsize_bytes = ${value}\n`,
      's',
    ).entries;
    expect(entry?.size_bytes).toBe(expected);
  });
});

describe('parseCatalog: refused catalogs', () => {
  it('refuses text that is not TOML', () => {
    expect(refusal('version = 1\n[[images]\n', 'bad.toml').message).toMatch(
      /^catalog at bad\.toml is not valid TOML: .*line 2/,
    );
  });

  it('refuses bytes that are not UTF-8', () => {
    expect(refusal(new Uint8Array([0x76, 0xff, 0xfe]), 'bin.toml').message).toContain(
      'catalog at bin.toml is not valid TOML',
    );
  });

  it.each([
    ['', 'None'],
    ['version = 2\n', '2'],
    ['version = 2.0\n', '2.0'],
    ['version = "1"\n', "'1'"],
  ])('refuses version %j', (toml, repr) => {
    expect(refusal(toml, 'v.toml').message).toBe(
      `catalog at v.toml: version=${repr}, this bty understands version=1`,
    );
  });

  it('refuses images that are not an array', () => {
    expect(refusal('version = 1\nimages = "x"\n', 'i').message).toBe(
      'catalog at i: ``images`` must be an array of tables, got str',
    );
    expect(refusal('version = 1\n[images]\nname = "a"\n', 'i').message).toContain('got dict');
  });

  it('refuses an images element that is not a table', () => {
    expect(refusal('version = 1\nimages = [1]\n', 'i').message).toBe(
      'catalog at i: ``images`` entry must be a table, got int',
    );
  });

  it('refuses an entry without src, quoting the entry', () => {
    expect(refusal('version = 1\n[[images]]\nname = "a.img"\nsize_bytes = 3\n').message).toBe(
      "catalog entry missing required field: 'src' (entry: {'name': 'a.img', 'size_bytes': 3})",
    );
  });

  it('refuses an entry without name', () => {
    expect(refusal('version = 1\n[[images]]\nsrc = "https://h/a"\n').message).toContain(
      "catalog entry missing required field: 'name'",
    );
  });

  it.each(['abc', '', 'g'.repeat(64), 'a'.repeat(63), `sha256:${SHA}`])(
    'refuses sha256 %j',
    (sha) => {
      expect(
        refusal(`version = 1\n[[images]]\nname = "a.img"\nsrc = "https://h/a"\nsha256 = "${sha}"\n`)
          .message,
      ).toBe(`catalog entry 'a.img': sha256 must be a 64-char lower-case hex string, got '${sha}'`);
    },
  );

  it('refuses a duplicate name', () => {
    expect(
      refusal(
        `version = 1
[[images]]
name = "a.img"
src = "https://h/1"
[[images]]
name = "a.img"
src = "https://h/2"
`,
        'dup.toml',
      ).message,
    ).toBe("catalog at dup.toml: duplicate image name 'a.img'");
  });

  it('refuses a file:// src: a catalog is published and read elsewhere', () => {
    const message = refusal(
      'version = 1\n[[images]]\nname = "a.img"\nsrc = "file:///srv/a.img"\n',
      'f.toml',
    ).message;
    expect(message).toContain("catalog at f.toml: entry 'a.img' has ``file://`` src");
    expect(message).toContain('oras:// / http:// / https://');
  });

  it('refuses a supplied ref that does not match the src', () => {
    expect(
      refusal(`version = 1\n[[images]]\nname = "a.img"\nsrc = "https://h/a"\nref = "${SHA}"\n`)
        .message,
    ).toContain("catalog entry 'a.img': ``ref`` mismatch: supplied '" + SHA + "'");
  });

  it('refuses a ref it cannot verify because the src is malformed', () => {
    expect(
      refusal(`version = 1\n[[images]]\nname = "a.img"\nsrc = "ftp://h/a"\nref = "${SHA}"\n`)
        .message,
    ).toContain(
      "catalog entry 'a.img': cannot verify ``ref`` because ``src`` is malformed: unsupported src scheme",
    );
  });

  it.each(['"abc"', '"1.5"', '[1]', '{ a = 1 }', 'nan', 'inf', '1979-05-27'])(
    'refuses size_bytes = %s cleanly (upstream crashes)',
    (value) => {
      expect(
        refusal(
          `version = 1\n[[images]]\nname = "a.img"\nsrc = "https://h/a"\nsize_bytes = ${value}\n`,
        ).message,
      ).toContain("catalog entry 'a.img': size_bytes must be an integer, got ");
    },
  );
});
