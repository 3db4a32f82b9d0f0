import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_IMAGE_ROOT,
  imageRoot,
  listLocalImages,
  readSidecarSha256,
} from '../../src/flash/images.ts';

const SHA = '0123456789abcdef'.repeat(4);

describe('imageRoot', () => {
  it('uses BTY_IMAGE_ROOT when set and non-empty', () => {
    expect(imageRoot({ BTY_IMAGE_ROOT: '/srv/images' })).toBe('/srv/images');
  });

  it('falls back to /var/lib/bty/images', () => {
    expect(imageRoot({})).toBe(DEFAULT_IMAGE_ROOT);
    expect(imageRoot({ BTY_IMAGE_ROOT: '' })).toBe('/var/lib/bty/images');
  });
});

describe('listLocalImages', () => {
  let root: string;
  let outside: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'bty-images-'));
    outside = await mkdtemp(join(tmpdir(), 'bty-images-outside-'));
    const files: Record<string, string | Buffer> = {
      'debian-x86_64.img.zst': Buffer.alloc(10),
      'debian-x86_64.img.zst.sha256': `${SHA.toUpperCase()}  debian-x86_64.img.zst\n`,
      'Ubuntu-arm64.qcow2': Buffer.alloc(20),
      'Ubuntu-arm64.qcow2.sha256': 'not-a-digest\n',
      'alpine.img': Buffer.alloc(3),
      'plain.img.gz': Buffer.alloc(4),
      '.hidden.img': Buffer.alloc(5),
      '._mac.img': Buffer.alloc(6),
      'notes.txt': 'hello',
      'disc.iso': Buffer.alloc(7),
      'rootfs.tar.gz': Buffer.alloc(8),
      'orphan.sha256': `${SHA}\n`,
      'x-\u{1F600}.img': Buffer.alloc(1),
      'x-\uFF21.img': Buffer.alloc(1),
    };
    for (const [name, content] of Object.entries(files)) await writeFile(join(root, name), content);
    await writeFile(join(outside, 'secret.img'), Buffer.alloc(9));
    await symlink(join(outside, 'secret.img'), join(root, 'link-out.img'));
    await symlink(join(root, 'alpine.img'), join(root, 'link-in.img'));
    await mkdir(join(root, 'folder.img'));
    await writeFile(join(root, 'folder.img', 'nested.img'), Buffer.alloc(1));
    await mkdir(join(root, 'dirsidecar.img.sha256'));
    await writeFile(join(root, 'dirsidecar.img'), Buffer.alloc(2));
    execFileSync('mkfifo', [join(root, 'fifo.img')]);
    execFileSync('mkfifo', [join(root, 'alpine.img.sha256')]);
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  it('lists direct regular files of known formats, sorted by code point', async () => {
    const images = await listLocalImages(root);
    expect(images.map((i) => i.name)).toEqual([
      '._mac.img',
      '.hidden.img',
      'Ubuntu-arm64.qcow2',
      'alpine.img',
      'debian-x86_64.img.zst',
      'dirsidecar.img',
      'plain.img.gz',
      // U+FF21 sorts before U+1F600 by code point (by UTF-16 unit it would not)
      'x-\uFF21.img',
      'x-\u{1F600}.img',
    ]);
  });

  it('describes each image, with the sidecar digest when it is valid', async () => {
    const byName = new Map((await listLocalImages(root)).map((i) => [i.name, i]));
    expect(byName.get('debian-x86_64.img.zst')).toEqual({
      name: 'debian-x86_64.img.zst',
      path: join(root, 'debian-x86_64.img.zst'),
      format: 'img.zst',
      size_bytes: 10,
      sha256: SHA,
      arch: 'x86_64',
    });
    expect(byName.get('Ubuntu-arm64.qcow2')).toMatchObject({
      format: 'qcow2',
      size_bytes: 20,
      sha256: null, // malformed sidecar
      arch: 'arm64',
    });
    expect(byName.get('dirsidecar.img')?.sha256).toBeNull(); // sidecar is a directory
    expect(byName.get('alpine.img')?.sha256).toBeNull(); // sidecar is a FIFO: not read, no hang
    expect(byName.get('plain.img.gz')?.arch).toBeNull();
  });

  it('skips symlinks, directories, FIFOs, sidecars and unknown formats', async () => {
    const names = (await listLocalImages(root)).map((i) => i.name);
    for (const skipped of [
      'link-out.img',
      'link-in.img',
      'folder.img',
      'nested.img',
      'fifo.img',
      'orphan.sha256',
      'notes.txt',
      'disc.iso',
      'rootfs.tar.gz',
    ]) {
      expect(names).not.toContain(skipped);
    }
  });

  it('returns an empty list for a missing root or a root that is a file', async () => {
    expect(await listLocalImages(join(root, 'does-not-exist'))).toEqual([]);
    expect(await listLocalImages(join(root, 'alpine.img'))).toEqual([]);
  });

  it('uses BTY_IMAGE_ROOT by default', async () => {
    const saved = process.env.BTY_IMAGE_ROOT;
    process.env.BTY_IMAGE_ROOT = root;
    try {
      expect((await listLocalImages()).length).toBeGreaterThan(0);
    } finally {
      if (saved === undefined) delete process.env.BTY_IMAGE_ROOT;
      else process.env.BTY_IMAGE_ROOT = saved;
    }
  });
});

describe('readSidecarSha256', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bty-sidecar-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    [`${SHA}  x.img\n`, SHA],
    [`\n  ${SHA.toUpperCase()}\n`, SHA],
    [SHA, SHA],
    [`${SHA.slice(1)}  x.img\n`, null],
    [`sha256:${SHA}\n`, null],
    ['', null],
  ])('reads %j as %j', async (content, expected) => {
    const image = join(dir, 'x.img');
    await writeFile(`${image}.sha256`, content);
    expect(await readSidecarSha256(image)).toBe(expected);
  });

  it('returns null for a sidecar that is not UTF-8', async () => {
    const image = join(dir, 'bin.img');
    await writeFile(`${image}.sha256`, Buffer.from([0xff, 0xfe, 0x00]));
    expect(await readSidecarSha256(image)).toBeNull();
  });

  it('returns null when there is no sidecar', async () => {
    expect(await readSidecarSha256(join(dir, 'none.img'))).toBeNull();
  });
});
